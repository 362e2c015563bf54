"""Pure x86 knowledge: descriptors, paging, control registers, boot states."""
