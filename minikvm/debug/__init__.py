"""Diagnostics: dumps, statistics, disassembly. They watch the guest, never steer it."""
