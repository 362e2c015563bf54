"""The flat-binary loader: where images and tables land, and which images it refuses."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from minikvm.arch.x86.descriptors import decode_descriptor
from minikvm.arch.x86.registers import CR0_PE, CR0_PG, CR4_OSFXSR, CR4_PAE, EFER_LMA, EFER_LME
from minikvm.arch.x86.state import Mode
from minikvm.boot import layout
from minikvm.boot.errors import ImageError
from minikvm.boot.flat import load_flat
from minikvm.boot.multiboot import find_header
from minikvm.boot.select import check_image_size
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


# --- a file too big for guest RAM is refused from its size, before it is read ---------------

KIB64 = 64 << 10
MB_MAGIC = 0x1BADB002


def multiboot_header(flags: int, checksum: int | None = None) -> bytes:
    return struct.pack("<III", MB_MAGIC, flags, -(MB_MAGIC + flags) & 0xFFFFFFFF if checksum is None else checksum)


@pytest.mark.parametrize(("mode", "load"), [(Mode.REAL, None), (Mode.PROTECTED, None), (Mode.REAL, 0x8000)])
def test_the_size_check_refuses_in_the_loaders_words(tmp_path: Path, mode: Mode, load: int | None) -> None:
    image = b"\x90" * (KIB64 + 1)
    path = tmp_path / "big.bin"
    path.write_bytes(image)
    mem = GuestMemory([(0, KIB64)])
    try:
        with pytest.raises(ImageError) as loaded:
            load_flat(mem, image, mode, str(path), load=load)
    finally:
        mem.close()
    with pytest.raises(ImageError) as checked:
        check_image_size(path, len(image), mode, KIB64, load)
    assert str(checked.value) == str(loaded.value)


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.bin"
    with path.open("wb") as stream:
        stream.truncate(8 << 30)  # sparse: 8 GiB that would take seconds and gigabytes to read
    with pytest.raises(ImageError, match=r"the image is 8589934592 bytes: it does not fit at load address 0x1000 "
                                         r"below 0x400000 \(4096 KiB of guest RAM\)"):
        check_image_size(path, path.stat().st_size, Mode.PAGING, 4 << 20)


def test_an_image_that_fits_is_not_even_opened(tmp_path: Path) -> None:
    check_image_size(tmp_path / "missing.bin", KIB64, Mode.REAL, KIB64)


def test_a_multiboot_kernel_may_be_bigger_than_ram(tmp_path: Path) -> None:
    """Only its segments are loaded (an ELF's debug information may outweigh them): the loader decides."""
    path = tmp_path / "kernel.elf"
    path.write_bytes(multiboot_header(0) + bytes(2 * KIB64))
    check_image_size(path, path.stat().st_size, Mode.REAL, KIB64)


@pytest.mark.parametrize(("head", "problem"), [
    (multiboot_header(0, checksum=0), "bad checksum"),
    (bytes(8192 - 12) + multiboot_header(1 << 16), "the first 8192 bytes"),  # a.out kludge fields cut off at 8 KiB
])
def test_a_big_file_with_a_bad_multiboot_header_is_refused_for_it(tmp_path: Path, head: bytes, problem: str) -> None:
    image = head + bytes(2 * KIB64)
    path = tmp_path / "big.bin"
    path.write_bytes(image)
    with pytest.raises(ImageError, match=problem) as checked:
        check_image_size(path, len(image), Mode.REAL, KIB64)
    with pytest.raises(ImageError) as found:
        find_header(image, str(path))  # what the loader says, having read it all
    assert str(checked.value) == str(found.value)


def test_a_big_elf_without_a_multiboot_header_is_refused_for_that(tmp_path: Path) -> None:
    path = tmp_path / "big.elf"
    path.write_bytes(b"\x7fELF" + bytes(2 * KIB64))
    with pytest.raises(ImageError, match="an ELF file without a Multiboot header"):
        check_image_size(path, path.stat().st_size, Mode.REAL, KIB64)
