"""The flat-binary loader: where images and tables land, and which images it refuses."""

from __future__ import annotations

import pytest

from minikvm.arch.x86.descriptors import decode_descriptor
from minikvm.arch.x86.registers import CR0_PE, CR0_PG, CR4_OSFXSR, CR4_PAE, EFER_LMA, EFER_LME
from minikvm.arch.x86.state import Mode
from minikvm.boot import layout
from minikvm.boot.errors import ImageError
from minikvm.boot.flat import load_flat
from minikvm.memory import GuestMemory


@pytest.fixture
def mem4m() -> GuestMemory:
    mem = GuestMemory([(0, 4 << 20)])
    yield mem
    mem.close()


def test_real_mode_follows_the_abi(mem4m: GuestMemory) -> None:
    state = load_flat(mem4m, b"\xf4", Mode.REAL, "t.bin")
    assert mem4m.read(0, 1) == b"\xf4"
    assert state.regs == {"rip": 0, "rsp": 0, "rflags": 2}
    assert all(state.segments[s].selector == 0 and state.segments[s].limit == 0xFFFF
               for s in ("cs", "ds", "es", "fs", "gs", "ss"))
    assert not state.cr0 & CR0_PE


def test_real_mode_entry_above_64k_uses_a_segment(mem4m: GuestMemory) -> None:
    state = load_flat(mem4m, b"\x90\xf4", Mode.REAL, "t.bin", load=0x12340)
    cs = state.segments["cs"]
    assert cs.base + state.regs["rip"] == 0x12340 and state.regs["rip"] < 0x10000


def test_protected_mode_writes_the_abi_gdt_and_empty_idt(mem4m: GuestMemory) -> None:
    state = load_flat(mem4m, b"\xf4", Mode.PROTECTED, "t.bin")
    assert state.regs["rip"] == layout.PM_LOAD and mem4m.read(layout.PM_LOAD, 1) == b"\xf4"
    assert state.gdt.base == 0x500 and state.gdt.limit == 39
    accesses = [decode_descriptor(mem4m.read(0x500 + 8 * i, 8)).access for i in range(5)]
    assert accesses == [0x00, 0x9A, 0x92, 0xFA, 0xF2]
    assert state.idt.base == 0x528 and state.idt.limit == 0x7FF and mem4m.read(0x528, 0x800) == bytes(0x800)
    assert state.cr0 & CR0_PE and not state.cr0 & CR0_PG and state.cr4 & CR4_OSFXSR


def test_long_mode_state_and_tables_out_of_the_way(mem4m: GuestMemory) -> None:
    state = load_flat(mem4m, b"\xf4" * 100, Mode.LONG, "t.bin")
    assert state.regs["rsp"] == 0x8000 and state.regs["rip"] == 0x1000
    assert state.efer & (EFER_LME | EFER_LMA) == EFER_LME | EFER_LMA and state.cr4 & CR4_PAE
    assert state.cr3 >= 2 << 20 and state.segments["cs"].l
    assert mem4m.read(0x1000, 100) == b"\xf4" * 100  # the tables did not overwrite the image


@pytest.mark.parametrize(("mode", "image", "load", "problem"), [
    (Mode.REAL, b"", None, "empty"),
    (Mode.REAL, b"\x90" * ((4 << 20) + 1), None, "does not fit"),
    (Mode.PROTECTED, b"\x90", 0x600, "overlaps the GDT"),
    (Mode.LONG, b"\x90" * ((4 << 20) - 0x3000), None, "page tables"),
    (Mode.REAL, b"\x90", (4 << 20) - 0, "does not fit"),
])
def test_bad_images_are_refused_with_the_reason(mem4m: GuestMemory, mode: Mode, image: bytes,
                                                 load: int | None, problem: str) -> None:
    with pytest.raises(ImageError, match=problem) as info:
        load_flat(mem4m, image, mode, "guest.bin", load=load)
    assert info.value.path == "guest.bin"
