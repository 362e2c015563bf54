"""Page-table builders. Each writes its tables into guest memory and returns CR3.

Entry bits from the Intel SDM vol. 3A §4: P, R/W, U/S, and PS for large pages.
"""

from __future__ import annotations

import struct
from typing import Protocol

PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_PS = 1 << 7

PAGE_4K = 0x1000
PAGE_2M = 0x200000
PAGE_1G = 0x40000000


class Writable(Protocol):
    def write(self, addr: int, data: bytes) -> None: ...


def long_mode_tables_size(ram_size: int) -> int:
    """Bytes needed by `identity_map_long` for `ram_size` bytes of RAM (PML4 + PDPT + PDs)."""
    return PAGE_4K * (2 + -(-ram_size // PAGE_1G))


def identity_map_long(mem: Writable, base: int, ram_size: int, user: bool = True) -> int:
    """Identity-map [0, ram_size) with 2 MiB pages: one PML4, one PDPT, a PD per GiB, at `base`.

    `user` sets U/S on every level so ring-3 code can run without its own tables.
    """
    if base % PAGE_4K:
        raise ValueError(f"page tables at {base:#x} are not 4 KiB aligned")
    flags = PTE_P | PTE_RW | (PTE_US if user else 0)
    pd_count = -(-ram_size // PAGE_1G)
    if pd_count > 512:
        raise ValueError("more than 512 GiB cannot be mapped with one PDPT")
    pml4, pdpt = base, base + PAGE_4K
    mem.write(pml4, struct.pack("<Q", pdpt | flags) + bytes(PAGE_4K - 8))
    mem.write(pdpt, b"".join(struct.pack("<Q", (pdpt + PAGE_4K * (1 + i)) | flags) for i in range(pd_count))
              + bytes(PAGE_4K - 8 * pd_count))
    pages = -(-ram_size // PAGE_2M)
    entries = [struct.pack("<Q", (i * PAGE_2M) | flags | PTE_PS) for i in range(pages)]
    entries += [bytes(8)] * (pd_count * 512 - pages)
    mem.write(pdpt + PAGE_4K, b"".join(entries))
    return pml4
