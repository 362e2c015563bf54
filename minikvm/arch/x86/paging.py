"""Page-table builders. Each writes its tables into guest memory and returns CR3.

Entry formats from the Intel SDM vol. 3A chapter 4: 32-bit paging (§4.3, 4-byte
entries, 4 KiB pages or 4 MiB pages with CR4.PSE), PAE paging (§4.4, 8-byte
entries, a 4-entry PDPT, 4 KiB or 2 MiB pages) and 4-level paging (§4.5).
`walk.translate` reads what these write; the unit tests check one against the other.

A mapping is `(virtual, physical, size)`; all three must be multiples of the
page size. Non-leaf entries get P, R/W and U/S from `flags` (access rights are
the AND over every level, so this leaves the decision to the leaf); leaves get
all of `flags`. Supervisor-only unless the caller asks for PTE_US.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Protocol

PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_PWT = 1 << 3
PTE_PCD = 1 << 4
PTE_A = 1 << 5
PTE_D = 1 << 6
PTE_PS = 1 << 7  # in a PDE (or 4-level PDPTE): this entry maps a large page
PTE_G = 1 << 8
PTE_XD = 1 << 63  # execute-disable; PAE and 4-level only, and only with EFER.NXE

PAGE_4K = 0x1000
PAGE_2M = 0x200000
PAGE_4M = 0x400000
PAGE_1G = 0x40000000

# What a caller may put in `flags`: PS is the builder's to set (and is PAT in a 4 KiB PTE).
_LEAF_FLAGS = PTE_P | PTE_RW | PTE_US | PTE_PWT | PTE_PCD | PTE_A | PTE_D | PTE_G
_TABLE_FLAGS = PTE_P | PTE_RW | PTE_US

Mapping = tuple[int, int, int]


class Writable(Protocol):
    def write(self, addr: int, data: bytes) -> None: ...


# --- shared checks ----------------------------------------------------------


def _check_flags(flags: int, allowed: int) -> int:
    if not flags & PTE_P:
        raise ValueError(f"flags {flags:#x} lack P: the mappings would not be present")
    if flags & ~allowed:
        raise ValueError(f"flags {flags:#x} have bits {flags & ~allowed:#x} this builder does not set "
                         f"(allowed: {allowed:#x})")
    return flags


def _check_aligned(addr: int, align: int, what: str, limit: int) -> None:
    if addr % align or not 0 <= addr < limit:
        raise ValueError(f"{what} at {addr:#x} must be {align:#x}-aligned and below {limit:#x}")


def _pages(mappings: Iterable[Mapping], page: int, virt_limit: int, phys_limit: int) -> dict[int, int]:
    """virtual page → physical page for every page of every mapping; a page mapped twice is an error."""
    pages: dict[int, int] = {}
    for virt, phys, size in mappings:
        if size <= 0 or virt % page or phys % page or size % page:
            raise ValueError(f"mapping {virt:#x} → {phys:#x} size {size:#x} is not a whole number of "
                             f"{page:#x}-byte pages")
        if virt < 0 or virt + size > virt_limit:
            raise ValueError(f"virtual range {virt:#x}+{size:#x} is beyond {virt_limit:#x}")
        if phys < 0 or phys + size > phys_limit:
            raise ValueError(f"physical range {phys:#x}+{size:#x} is beyond {phys_limit:#x}, which these "
                             f"entries cannot hold")
        for offset in range(0, size, page):
            if virt + offset in pages:
                raise ValueError(f"virtual page {virt + offset:#x} is mapped twice")
            pages[virt + offset] = phys + offset
    return pages


def _assign(tables: Sequence[int] | int | None, count: int, what: str, limit: int) -> list[int]:
    """Addresses for `count` tables: from the caller's list in order, or consecutive from a base."""
    if isinstance(tables, int):
        chosen = [tables + i * PAGE_4K for i in range(count)]
    else:
        given = list(tables or [])
        if len(given) < count:
            raise ValueError(f"the mappings need {count} {what}(s), {len(given)} address(es) given")
        chosen = given[:count]  # extra addresses are left untouched
    for addr in chosen:
        _check_aligned(addr, PAGE_4K, what, limit)
    return chosen


def _check_disjoint(regions: list[tuple[int, int, str]]) -> None:
    ordered = sorted(regions)
    for (a, size, what), (b, _, other) in pairwise(ordered):
        if a + size > b:
            raise ValueError(f"{what} at {a:#x} overlaps {other} at {b:#x}")


def _write_tables(mem: Writable, tables: dict[int, list[int]], fmt: str) -> None:
    for addr, entries in tables.items():
        mem.write(addr, struct.pack(f"<{len(entries)}{fmt}", *entries))


# --- 32-bit paging (§4.3) ---------------------------------------------------


def map_32bit(mem: Writable, directory: int, tables: Sequence[int] | int, mappings: Iterable[Mapping],
              flags: int = PTE_P | PTE_RW) -> int:
    """32-bit paging with 4 KiB pages (CR4.PAE=0). Returns CR3 (= `directory`).

    `tables` are the page-table addresses, handed out to the directory entries
    that need one in increasing index order (or one base address: consecutive
    pages from there). The directory and each used table are written whole
    (4 KiB, 1024 4-byte entries), so nothing stale survives in them.
    """
    _check_flags(flags, _LEAF_FLAGS)
    _check_aligned(directory, PAGE_4K, "page directory", 1 << 32)
    pages = _pages(mappings, PAGE_4K, 1 << 32, 1 << 32)
    indices = sorted({virt >> 22 for virt in pages})
    addrs = _assign(tables, len(indices), "page table", 1 << 32)
    _check_disjoint([(directory, PAGE_4K, "the page directory")] + [(a, PAGE_4K, "a page table") for a in addrs])
    pd = [0] * 1024
    pts = {addr: [0] * 1024 for addr in addrs}
    table_of = dict(zip(indices, addrs, strict=True))
    for index, addr in table_of.items():
        pd[index] = addr | (flags & _TABLE_FLAGS)
    for virt, phys in pages.items():
        pts[table_of[virt >> 22]][(virt >> 12) & 0x3FF] = phys | flags
    _write_tables(mem, {directory: pd, **pts}, "I")
    return directory


def map_32bit_pse(mem: Writable, directory: int, mappings: Iterable[Mapping], flags: int = PTE_P | PTE_RW) -> int:
    """32-bit paging with 4 MiB pages: PDEs with PS=1, no page tables. The guest needs CR4.PSE.

    Physical addresses above 4 GiB (up to 1 TiB) go in PDE bits 20:13 (PSE-36,
    SDM table 4-4); the CPU must support PSE-36 for those.
    """
    _check_flags(flags, _LEAF_FLAGS)
    _check_aligned(directory, PAGE_4K, "page directory", 1 << 32)
    pd = [0] * 1024
    for virt, phys in _pages(mappings, PAGE_4M, 1 << 32, 1 << 40).items():
        pd[virt >> 22] = (phys & 0xFFC00000) | ((phys >> 32) << 13) | flags | PTE_PS
    _write_tables(mem, {directory: pd}, "I")
    return directory


# --- PAE paging (§4.4) ------------------------------------------------------


def map_pae(mem: Writable, pdpt: int, directories: Sequence[int] | int, mappings: Iterable[Mapping],
            flags: int = PTE_P | PTE_RW, *, tables: Sequence[int] | int | None = None,
            page_size: int = PAGE_4K) -> int:
    """PAE paging (CR4.PAE=1, not long mode) with 4 KiB or 2 MiB pages. Returns CR3 (= `pdpt`).

    The PDPT is 4 entries (32 bytes, 32-byte aligned, below 4 GiB because CR3
    holds 32 bits); each covers 1 GiB and points to a page directory from
    `directories`. PDPTEs carry only P: their bits 2:1 and 8:5 are reserved
    (SDM table 4-8), and a set reserved bit makes the MOV to CR3 raise #GP.
    `tables` (4 KiB pages only) are handed out like `map_32bit`'s. PTE_XD in
    `flags` marks the leaves no-execute (the guest needs EFER.NXE, else the
    bit is reserved).
    """
    if page_size not in (PAGE_4K, PAGE_2M):
        raise ValueError(f"PAE pages are 4 KiB or 2 MiB, not {page_size:#x}")
    if page_size == PAGE_2M and tables:
        raise ValueError("2 MiB pages need no page tables")
    _check_flags(flags, _LEAF_FLAGS | PTE_XD)
    _check_aligned(pdpt, 32, "the PDPT", 1 << 32)
    pages = _pages(mappings, page_size, 1 << 32, 1 << 52)
    pd_indices = sorted({virt >> 30 for virt in pages})
    pd_addrs = _assign(directories, len(pd_indices), "page directory", 1 << 52)
    pt_keys = sorted({virt >> 21 for virt in pages}) if page_size == PAGE_4K else []
    pt_addrs = _assign(tables, len(pt_keys), "page table", 1 << 52)
    _check_disjoint([(pdpt, 32, "the PDPT")] + [(a, PAGE_4K, "a page directory") for a in pd_addrs]
                    + [(a, PAGE_4K, "a page table") for a in pt_addrs])
    root = [0] * 4
    pd_of = dict(zip(pd_indices, pd_addrs, strict=True))
    pt_of = dict(zip(pt_keys, pt_addrs, strict=True))
    written: dict[int, list[int]] = {addr: [0] * 512 for addr in (*pd_addrs, *pt_addrs)}
    for index, addr in pd_of.items():
        root[index] = addr | PTE_P
    for key, addr in pt_of.items():  # key = virt >> 21: PDPT index (2 bits) then PD index (9 bits)
        written[pd_of[key >> 9]][key & 0x1FF] = addr | (flags & _TABLE_FLAGS)
    for virt, phys in pages.items():
        if page_size == PAGE_2M:
            written[pd_of[virt >> 30]][(virt >> 21) & 0x1FF] = phys | flags | PTE_PS
        else:
            written[pt_of[virt >> 21]][(virt >> 12) & 0x1FF] = phys | flags
    _write_tables(mem, {pdpt: root, **written}, "Q")
    return pdpt


# --- 4-level paging (§4.5) --------------------------------------------------


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
