"""The --paging loader: ABI.md's machine exactly, checked byte by byte, and the images it refuses."""

from __future__ import annotations

import struct

import pytest

from minikvm.arch.x86.descriptors import decode_descriptor
from minikvm.arch.x86.registers import (
    CR0_ET,
    CR0_MP,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR4_OSFXSR,
    CR4_OSXMMEXCPT,
    CR4_PAE,
    CR4_PSE,
)
from minikvm.arch.x86.state import Mode
from minikvm.arch.x86.walk import EXECUTE, WRITE, Fault, translate
from minikvm.boot.errors import ImageError
from minikvm.boot.paging_layout import load_paging_abi
from minikvm.memory import GuestMemory

IMAGE = bytes(range(256)) * 4


@pytest.fixture
def mem4m() -> GuestMemory:
    mem = GuestMemory([(0, 4 << 20)])
    yield mem
    mem.close()


def pd_entries(mem: GuestMemory) -> list[int]:
    return list(struct.unpack("<1024I", mem.read(0x100000, 0x1000)))


def test_default_state_is_the_abi_with_sse_usable(mem4m: GuestMemory) -> None:
    state = load_paging_abi(mem4m, IMAGE, "k.bin")
    assert state.mode is Mode.PAGING
    assert state.cr0 == CR0_PE | CR0_ET | CR0_PG | CR0_MP | CR0_NE == 0x80000033
    assert state.cr4 == CR4_OSFXSR | CR4_OSXMMEXCPT == 0x600
    assert (state.cr3, state.efer) == (0x100000, 0)
    assert state.regs == {"rip": 0x80001000, "rsp": 0, "rflags": 0x2}  # everything else 0
    assert state.segments["cs"].selector == 0x08 and state.segments["cs"].db
    assert all(state.segments[s].selector == 0x10 for s in ("ds", "es", "fs", "gs", "ss"))
    assert (state.gdt.base, state.gdt.limit, state.idt.base, state.idt.limit) == (0x500, 39, 0x528, 0x7FF)


def test_memory_holds_gdt_idt_tables_and_image(mem4m: GuestMemory) -> None:
    mem4m.fill(0x500, 0x828, 0xCC)  # whatever was there, the IDT must come out empty
    mem4m.fill(0x100000, 0x3000, 0xCC)
    load_paging_abi(mem4m, IMAGE, "k.bin")
    assert mem4m.read(0x1000, len(IMAGE)) == IMAGE
    assert [decode_descriptor(mem4m.read(0x500 + 8 * i, 8)).access for i in range(5)] == [0, 0x9A, 0x92, 0xFA, 0xF2]
    assert all(decode_descriptor(mem4m.read(0x500 + 8 * i, 8)).flags == 0xC for i in range(1, 5))
    assert mem4m.read(0x528, 0x800) == bytes(0x800)
    pd = pd_entries(mem4m)
    assert (pd[0], pd[512]) == (0x00101003, 0x00102003) and sum(1 for e in pd if e) == 2
    for table in (0x101000, 0x102000):
        assert list(struct.unpack("<1024I", mem4m.read(table, 0x1000))) == [(i << 12) | 3 for i in range(1024)]


def test_the_entry_reaches_the_image_through_the_tables(mem4m: GuestMemory) -> None:
    state = load_paging_abi(mem4m, IMAGE, "k.bin")
    fetch = translate(mem4m.read, state.cr0, state.cr3, state.cr4, state.efer, state.regs["rip"], EXECUTE)
    assert fetch.phys == 0x1000 and mem4m.read(fetch.phys, 16) == IMAGE[:16]
    low = translate(mem4m.read, state.cr0, state.cr3, state.cr4, state.efer, 0x1000, WRITE)
    assert low.phys == 0x1000


def test_4m_pages(mem4m: GuestMemory) -> None:
    mem4m.fill(0x101000, 0x2000, 0xCC)
    state = load_paging_abi(mem4m, IMAGE, "k.bin", pages="4m")
    assert state.cr4 == CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_PSE
    pd = pd_entries(mem4m)
    assert (pd[0], pd[512]) == (0x83, 0x83) and sum(1 for e in pd if e) == 2
    assert mem4m.read(0x101000, 0x2000) == b"\xcc" * 0x2000  # no page tables
    fetch = translate(mem4m.read, state.cr0, state.cr3, state.cr4, state.efer, 0x80001000, EXECUTE)
    assert (fetch.phys, fetch.page_size) == (0x1000, 4 << 20)


def test_4m_pages_may_use_the_table_pages_4k_would_need(mem4m: GuestMemory) -> None:
    load_paging_abi(mem4m, IMAGE, "k.bin", load=0x101000, entry=0x80101000, pages="4M")
    assert mem4m.read(0x101000, len(IMAGE)) == IMAGE


def test_raw_original_state_on_request(mem4m: GuestMemory) -> None:
    state = load_paging_abi(mem4m, IMAGE, "k.bin", cr0=0x80000011, cr4=0)
    assert (state.cr0, state.cr4) == (0x80000011, 0)


def test_load_and_entry_are_honoured(mem4m: GuestMemory) -> None:
    state = load_paging_abi(mem4m, IMAGE, "k.bin", load=0x200000, entry=0x80200010)
    assert state.regs["rip"] == 0x80200010 and mem4m.read(0x200000, len(IMAGE)) == IMAGE
    assert mem4m.read(0x1000, 16) == bytes(16)


def test_larger_ram_still_maps_only_4m() -> None:
    mem = GuestMemory([(0, 16 << 20)])
    try:
        state = load_paging_abi(mem, IMAGE, "k.bin", load=0xF00000 - len(IMAGE), entry=0x1000)
        assert mem.read(0xF00000 - len(IMAGE), len(IMAGE)) == IMAGE
        assert pd_entries(mem)[1] == 0
        beyond = translate(mem.read, state.cr0, state.cr3, state.cr4, state.efer, 0x400000)
        assert beyond.fault is Fault.NOT_PRESENT
    finally:
        mem.close()


@pytest.mark.parametrize(("image", "kwargs", "problem"), [
    (b"", {}, "empty"),
    (IMAGE, {"load": 0xD00}, "overlaps the GDT/IDT at 0x500-0xd28"),
    (IMAGE, {"load": 0x200}, "overlaps the GDT/IDT"),
    (b"\x90" * 0x10, {"load": 0xD20}, "overlaps the GDT/IDT"),
    (b"\x90" * 0x100000, {}, "overlaps the page tables at 0x100000-0x103000"),
    (IMAGE, {"load": 0x102FF0}, "overlaps the page tables"),
    (b"\x90" * 0x1000, {"pages": "4m", "load": 0xFF800}, "overlaps the page tables at 0x100000-0x101000"),
    (IMAGE, {"load": (4 << 20) - 0x100}, "does not fit"),
    (IMAGE, {"load": -0x1000}, "negative"),
    (IMAGE, {"entry": 0x80400000}, "entry 0x80400000 is not mapped"),
    (IMAGE, {"entry": 0x400000}, "not mapped"),
    (IMAGE, {"entry": 0x7FFFFFFF}, "not mapped"),
    (IMAGE, {"pages": "2m"}, "page size '2m'"),
    (IMAGE, {"cr0": 0x11}, "paging \\(PG\\) off"),
    (IMAGE, {"cr4": CR4_PAE}, "sets PAE"),
    (IMAGE, {"pages": "4m", "cr4": 0}, "leaves PSE off"),
])
def test_refusals_name_the_problem_and_touch_nothing(mem4m: GuestMemory, image: bytes, kwargs: dict,
                                                     problem: str) -> None:
    mem4m.fill(0, 4 << 20, 0xCC)
    with pytest.raises(ImageError, match=problem) as info:
        load_paging_abi(mem4m, image, "k.bin", **kwargs)
    assert info.value.path == "k.bin"
    assert mem4m.read(0, 4 << 20) == b"\xcc" * (4 << 20)


def test_an_image_below_the_gdt_is_fine(mem4m: GuestMemory) -> None:
    load_paging_abi(mem4m, b"\xf4" * 0x500, "k.bin", load=0, entry=0x80000000)
    assert mem4m.read(0, 0x500) == b"\xf4" * 0x500 and mem4m.read_u32(0x508) != 0


@pytest.mark.parametrize(("ram", "problem"), [(1 << 20, "does not reach the page tables"),
                                              (0x102000, "does not reach the page tables")])
def test_ram_too_small_for_the_tables(ram: int, problem: str) -> None:
    mem = GuestMemory([(0, ram)])
    try:
        with pytest.raises(ImageError, match=problem):
            load_paging_abi(mem, IMAGE, "k.bin")
    finally:
        mem.close()


def test_an_entry_in_unbacked_memory_is_refused() -> None:
    mem = GuestMemory([(0, 0x104000)])  # the tables fit; the mapped window reaches beyond RAM
    try:
        with pytest.raises(ImageError, match="outside guest RAM"):
            load_paging_abi(mem, IMAGE, "k.bin", entry=0x80200000)
        load_paging_abi(mem, IMAGE, "k.bin")  # the default entry lies in RAM
    finally:
        mem.close()
