"""Long-mode identity map: decode the tables the builder wrote and walk them."""

from __future__ import annotations

import pytest

from minikvm.arch.x86.paging import PAGE_2M, PTE_P, PTE_PS, PTE_RW, PTE_US, identity_map_long, long_mode_tables_size
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
