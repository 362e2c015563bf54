"""The KVM layer: the kernel uapi mirror, fd wrappers and typed exits."""
