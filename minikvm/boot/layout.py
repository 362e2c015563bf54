"""Where things live in guest-physical memory (ABI.md is the contract)."""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

# Real mode: image at 0, entered at 0:0.
REAL_LOAD = 0x0
REAL_MEMORY = 1 * MIB  # all a real-mode guest can address (the original gave 256 KiB; more breaks nobody)

# Protected and long mode: image at 0x1000, entered there.
PM_LOAD = 0x1000
PM_MEMORY = 4 * MIB
GDT_BASE = 0x500  # ABI: 5 descriptors, limit 39
IDT_BASE = 0x528  # ABI: 256 empty 8-byte gates
IDT32_LIMIT = 256 * 8 - 1

LONG_STACK = 0x8000  # ABI: RSP at entry
IDT64_LIMIT = 256 * 16 - 1

# The ABI's --paging layout (32-bit paging; runs with the software CPU issue).
PAGING_LOAD = 0x1000
PAGING_ENTRY = 0x80001000

# The most memory one guest may ask for: beyond a 32-bit guest's reach, and
# large enough for any teaching kernel.
MAX_MEMORY = 64 * 1024 * MIB
