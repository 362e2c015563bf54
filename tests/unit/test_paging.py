"""Page-table builders: decode the tables they wrote, by hand and with the walker, and walk them."""

from __future__ import annotations

import struct

import pytest

from minikvm.arch.x86.paging import (
    PAGE_2M,
    PAGE_4M,
    PTE_P,
    PTE_PS,
    PTE_RW,
    PTE_US,
    PTE_XD,
    identity_map_long,
    long_mode_tables_size,
    map_32bit,
    map_32bit_pse,
    map_pae,
)
from minikvm.arch.x86.registers import CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PSE, EFER_LMA, EFER_LME, EFER_NXE
from minikvm.arch.x86.walk import (
    EXECUTE,
    READ,
    USER_READ,
    USER_WRITE,
    WRITE,
    Access,
    Fault,
    Rights,
    Translation,
    translate,
)
from minikvm.memory import GuestMemory


def walk(mem: GuestMemory, cr3: int, virt: int) -> tuple[int, int]:
    """Translate `virt` through 4-level tables with 2 MiB leaves: (physical, leaf flags)."""
    entry = cr3
    for shift in (39, 30):
        entry = mem.read_u64((entry & ~0xFFF) + ((virt >> shift) & 0x1FF) * 8)
        assert entry & PTE_P, f"level {shift} not present"
    pde = mem.read_u64((entry & ~0xFFF) + ((virt >> 21) & 0x1FF) * 8)
    assert pde & PTE_P and pde & PTE_PS
    return (pde & ~0x1FFFFF & ((1 << 52) - 1)) | (virt & 0x1FFFFF), pde & 0xFFF


@pytest.mark.parametrize("ram", [4 << 20, 3 << 30])
def test_identity_map_covers_ram_and_nothing_more(ram: int) -> None:
    tables = long_mode_tables_size(ram)
    mem = GuestMemory([(0, 0x100000 + tables)])
    try:
        cr3 = identity_map_long(mem, 0x100000, ram)
        assert cr3 == 0x100000
        for virt in (0, 0x1234, PAGE_2M + 5, ram - 1):
            phys, flags = walk(mem, cr3, virt)
            assert phys == virt and flags & (PTE_RW | PTE_US) == PTE_RW | PTE_US
        pages = -(-ram // PAGE_2M)
        pd_index = pages % 512
        last_pd = cr3 + 0x1000 * (2 + (pages - 1) // 512)
        if pd_index:
            assert mem.read_u64(last_pd + pd_index * 8) == 0  # the page after RAM is not mapped
    finally:
        mem.close()


def test_supervisor_only_map() -> None:
    mem = GuestMemory([(0, 0x4000)])
    try:
        cr3 = identity_map_long(mem, 0, 4 << 20, user=False)
        _, flags = walk(mem, cr3, 0x3000)
        assert not flags & PTE_US
    finally:
        mem.close()


def test_tables_must_be_aligned() -> None:
    mem = GuestMemory([(0, 0x8000)])
    try:
        with pytest.raises(ValueError):
            identity_map_long(mem, 0x10, 4 << 20)
    finally:
        mem.close()


# --- 32-bit, PSE and PAE builders ---------------------------------------------------------------------

ABI_MAPPINGS = [(0, 0, 4 << 20), (0x80000000, 0, 4 << 20)]


def decode32(mem: GuestMemory, cr3: int, virt: int) -> int | None:
    """An independent 32-bit 4 KiB walk (no PSE, no rights) so the builder is not checked only by walk.py."""
    pde = mem.read_u32((cr3 & 0xFFFFF000) + (virt >> 22) * 4)
    if not pde & 1:
        return None
    pte = mem.read_u32((pde & 0xFFFFF000) + ((virt >> 12) & 0x3FF) * 4)
    return (pte & 0xFFFFF000) | (virt & 0xFFF) if pte & 1 else None


@pytest.fixture
def ram8m() -> GuestMemory:
    mem = GuestMemory([(0, 8 << 20)])
    yield mem
    mem.close()


def walk_ok(mem: GuestMemory, cr3: int, cr4: int, virt: int, efer: int = 0, access: Access = READ) -> Translation:
    result = translate(mem.read, CR0_PE | CR0_PG | CR0_WP, cr3, cr4, efer, virt, access)
    assert result.ok, result.describe()
    return result


def test_abi_layout_is_exactly_what_abi_md_says(ram8m: GuestMemory) -> None:
    ram8m.fill(0x100000, 0x3000, 0xAA)  # stale bytes must not survive in the directory or tables
    cr3 = map_32bit(ram8m, 0x100000, [0x101000, 0x102000], ABI_MAPPINGS)
    assert cr3 == 0x100000
    pd = struct.unpack("<1024I", ram8m.read(0x100000, 0x1000))
    assert pd[0] == 0x00101003 and pd[512] == 0x00102003  # present + writable, supervisor-only
    assert [i for i, pde in enumerate(pd) if pde] == [0, 512]
    for table in (0x101000, 0x102000):
        assert list(struct.unpack("<1024I", ram8m.read(table, 0x1000))) == [(i << 12) | 3 for i in range(1024)]
    for virt in (0, 0x1234, 0x3FFFFF, 0x80000000, 0x80001234, 0x803FFFFF):
        phys = virt & 0x3FFFFF
        assert decode32(ram8m, cr3, virt) == phys
        assert walk_ok(ram8m, cr3, 0, virt, access=WRITE).phys == phys
    for virt in (0x400000, 0x7FFFFFFF, 0x80400000, 0xFFFFFFFF):
        assert decode32(ram8m, cr3, virt) is None
        assert translate(ram8m.read, CR0_PE | CR0_PG, cr3, 0, 0, virt).fault is Fault.NOT_PRESENT


def test_tables_from_a_base_go_to_directory_entries_in_index_order(ram8m: GuestMemory) -> None:
    # Listed high first: PDE[0x300] still gets the first table, PDE[0x300+1] the second.
    cr3 = map_32bit(ram8m, 0x200000, 0x201000, [(0xC0400000, 0x5000, 0x2000), (0xC0000000, 0x3000, 0x1000)])
    assert ram8m.read_u32(0x200000 + 0x300 * 4) == 0x201003
    assert ram8m.read_u32(0x200000 + 0x301 * 4) == 0x202003
    assert decode32(ram8m, cr3, 0xC0000010) == 0x3010
    assert decode32(ram8m, cr3, 0xC0401FFF) == 0x6FFF
    assert decode32(ram8m, cr3, 0xC0001000) is None


def test_extra_table_addresses_are_left_untouched(ram8m: GuestMemory) -> None:
    ram8m.fill(0x203000, 0x1000, 0xAA)
    map_32bit(ram8m, 0x200000, [0x201000, 0x203000], [(0, 0, 0x1000)])
    assert ram8m.read(0x203000, 0x1000) == b"\xaa" * 0x1000


def test_user_pages_only_on_request(ram8m: GuestMemory) -> None:
    cr3 = map_32bit(ram8m, 0x200000, [0x201000], [(0x400000, 0x1000, 0x1000)], flags=PTE_P | PTE_RW | PTE_US)
    assert ram8m.read_u32(0x200004) == 0x201007 and ram8m.read_u32(0x201000) == 0x1007
    assert walk_ok(ram8m, cr3, 0, 0x400000, access=USER_WRITE).rights == Rights(True, True, True)
    map_32bit(ram8m, 0x200000, [0x201000], [(0x400000, 0x1000, 0x1000)], flags=PTE_P)  # read-only, supervisor
    assert ram8m.read_u32(0x200004) == 0x201001 and ram8m.read_u32(0x201000) == 0x1001
    assert translate(ram8m.read, CR0_PE | CR0_PG | CR0_WP, 0x200000, 0, 0, 0x400000, WRITE).fault \
        is Fault.WRITE_PROTECT


@pytest.mark.parametrize(("call", "problem"), [
    (lambda m: map_32bit(m, 0x200800, [0x201000], [(0, 0, 0x1000)]), "page directory"),
    (lambda m: map_32bit(m, 0x200000, [0x201010], [(0, 0, 0x1000)]), "page table"),
    (lambda m: map_32bit(m, 0x200000, [0x201000], [(0x10, 0, 0x1000)]), "whole number"),
    (lambda m: map_32bit(m, 0x200000, [0x201000], [(0, 0, 0)]), "whole number"),
    (lambda m: map_32bit(m, 0x200000, [0x201000], [(0, 0, 0x2000), (0x1000, 0, 0x1000)]), "mapped twice"),
    (lambda m: map_32bit(m, 0x200000, [0x201000], ABI_MAPPINGS), "need 2 page table"),
    (lambda m: map_32bit(m, 0x200000, [0x200000], [(0, 0, 0x1000)]), "overlaps"),
    (lambda m: map_32bit(m, 0x200000, [0x201000], [(0xFFFFF000, 0, 0x2000)]), "virtual range"),
    (lambda m: map_32bit(m, 0x200000, [0x201000], [(0, 0xFFFFF000, 0x2000)]), "physical range"),
    (lambda m: map_32bit(m, 0x200000, [0x201000], [(0, 0, 0x1000)], flags=PTE_RW), "lack P"),
    (lambda m: map_32bit(m, 0x200000, [0x201000], [(0, 0, 0x1000)], flags=PTE_P | PTE_PS), "does not set"),
    (lambda m: map_32bit_pse(m, 0x200000, [(0, 0x1000, 0x400000)]), "whole number"),
    (lambda m: map_32bit_pse(m, 0x200000, [(0, 1 << 40, 0x400000)]), "physical range"),
    (lambda m: map_pae(m, 0x200010, [0x201000], [(0, 0, 0x1000)], tables=[0x202000]), "PDPT"),
    (lambda m: map_pae(m, 0x200000, [0x201000], [(0, 0, 0x200000)], page_size=0x400000), "4 KiB or 2 MiB"),
    (lambda m: map_pae(m, 0x200000, [0x201000], [(0, 0, 0x1000)]), "need 1 page table"),
    (lambda m: map_pae(m, 0x200000, [0x201000], [(0, 0, 0x200000)], tables=[0x202000], page_size=PAGE_2M),
     "need no page tables"),
    (lambda m: map_pae(m, 0x201000, [0x201000], [(0, 0, 0x200000)], page_size=PAGE_2M), "overlaps"),
])
def test_builders_refuse_what_they_cannot_build(ram8m: GuestMemory, call, problem: str) -> None:
    before = ram8m.read(0x200000, 0x4000)
    with pytest.raises(ValueError, match=problem):
        call(ram8m)
    assert ram8m.read(0x200000, 0x4000) == before  # refused before writing anything


def test_pse_layout_has_two_large_pdes_and_no_tables(ram8m: GuestMemory) -> None:
    ram8m.fill(0x101000, 0x2000, 0xAA)
    cr3 = map_32bit_pse(ram8m, 0x100000, ABI_MAPPINGS)
    pd = struct.unpack("<1024I", ram8m.read(0x100000, 0x1000))
    assert pd[0] == 0x00000083 and pd[512] == 0x00000083  # P | R/W | PS, frame 0
    assert [i for i, pde in enumerate(pd) if pde] == [0, 512]
    assert ram8m.read(0x101000, 0x2000) == b"\xaa" * 0x2000  # no page tables written
    result = walk_ok(ram8m, cr3, CR4_PSE, 0x80123456)
    assert (result.phys, result.page_size, [e.level for e in result.entries]) == (0x123456, PAGE_4M, ["PDE"])


def test_pse36_puts_physical_bits_39_32_in_pde_bits_20_13(ram8m: GuestMemory) -> None:
    cr3 = map_32bit_pse(ram8m, 0x100000, [(0x400000, 0x12_C040_0000, 0x400000)], flags=PTE_P)
    assert ram8m.read_u32(0x100004) == 0xC0400000 | (0x12 << 13) | 0x81
    assert walk_ok(ram8m, cr3, CR4_PSE, 0x400010).phys == 0x12_C040_0010


def test_pae_4k_pages(ram8m: GuestMemory) -> None:
    ram8m.fill(0x200000, 0x20, 0xAA)
    cr3 = map_pae(ram8m, 0x200000, [0x201000, 0x202000], ABI_MAPPINGS, tables=0x203000)
    # PDPTEs carry P only; entry 0 covers virtual 0, entry 2 covers 0x80000000.
    assert struct.unpack("<4Q", ram8m.read(0x200000, 32)) == (0x201001, 0, 0x202001, 0)
    assert [ram8m.read_u64(0x201000 + 8 * i) for i in range(3)] == [0x203003, 0x204003, 0]
    assert [ram8m.read_u64(0x202000 + 8 * i) for i in range(3)] == [0x205003, 0x206003, 0]
    assert ram8m.read_u64(0x204000 + 8 * 511) == 0x3FF003
    for virt in (0x1234, 0x3FFFFF, 0x80200000):
        result = walk_ok(ram8m, cr3, CR4_PAE, virt, access=WRITE)
        assert result.phys == virt & 0x3FFFFF and [e.level for e in result.entries] == ["PDPTE", "PDE", "PTE"]
    assert translate(ram8m.read, CR0_PE | CR0_PG, cr3, CR4_PAE, 0, 0x400000).fault is Fault.NOT_PRESENT


def test_pae_2m_pages_and_execute_disable(ram8m: GuestMemory) -> None:
    cr3 = map_pae(ram8m, 0x200000, 0x201000, [(0xC0000000, 0x200000, 0x400000)],
                  flags=PTE_P | PTE_RW | PTE_XD, page_size=PAGE_2M)
    assert ram8m.read_u64(0x200018) == 0x201001
    assert ram8m.read_u64(0x201000) == PTE_XD | 0x200083 and ram8m.read_u64(0x201008) == PTE_XD | 0x400083
    result = walk_ok(ram8m, cr3, CR4_PAE, 0xC0300001, efer=EFER_NXE)
    assert (result.phys, result.page_size) == (0x500001, PAGE_2M)
    fetch = translate(ram8m.read, CR0_PE | CR0_PG, cr3, CR4_PAE, EFER_NXE, 0xC0300001, EXECUTE)
    assert fetch.fault is Fault.NO_EXECUTE


def test_long_mode_identity_map_through_the_walker(ram8m: GuestMemory) -> None:
    cr3 = identity_map_long(ram8m, 0x200000, 8 << 20, user=False)
    result = walk_ok(ram8m, cr3, CR4_PAE, 0x7FFFFF, efer=EFER_LME | EFER_LMA)
    assert (result.phys, result.page_size) == (0x7FFFFF, PAGE_2M)
    assert [e.level for e in result.entries] == ["PML4E", "PDPTE", "PDE"]
    assert translate(ram8m.read, CR0_PE | CR0_PG, cr3, CR4_PAE, EFER_LMA, 0x1000, USER_READ).fault \
        is Fault.USER_SUPERVISOR


def test_pae_pdpt_needs_only_32_byte_alignment(ram8m: GuestMemory) -> None:
    # CR3 bits 31:5 locate the PAE PDPT, so it can share a page with other data.
    cr3 = map_pae(ram8m, 0x2000E0, [0x201000], [(0x1000, 0x7000, 0x1000)], tables=[0x202000])
    assert cr3 == 0x2000E0 and ram8m.read_u64(0x2000E0) == 0x201001
    assert walk_ok(ram8m, cr3, CR4_PAE, 0x1008).phys == 0x7008
