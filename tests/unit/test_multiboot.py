"""The multiboot loader: finding the header, loading ELF and a.out-kludge kernels, what it hands over.

ELF test kernels are assembled and linked here with the system binutils, so
each test says exactly which program headers it is about.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from minikvm.arch.x86.descriptors import decode_descriptor
from minikvm.arch.x86.registers import CR0_PE, CR0_PG, RFLAGS_IF, RFLAGS_VM
from minikvm.arch.x86.state import Mode
from minikvm.boot.errors import ImageError
from minikvm.boot.multiboot import find_header, load_multiboot
from minikvm.memory import GuestMemory

MAGIC = 0x1BADB002
EAX_MAGIC = 0x2BADB002
INFO_ADDR = 0x9000  # where the loader documents the information structure
REPO = Path(__file__).resolve().parents[2]


def header(flags: int, *fields: int, checksum: int | None = None) -> bytes:
    if checksum is None:
        checksum = -(MAGIC + flags) & 0xFFFFFFFF
    return struct.pack(f"<III{len(fields)}I", MAGIC, flags, checksum, *fields)


@pytest.fixture
def mem() -> Iterator[GuestMemory]:
    memory = GuestMemory([(0, 4 << 20)])
    yield memory
    memory.close()


# --- finding the header ---------------------------------------------------------


def test_header_found_at_any_aligned_offset_in_the_first_8k() -> None:
    for offset in (0, 4, 0x1000, 8192 - 12):
        image = bytes(offset) + header(0x3) + bytes(64)
        found = find_header(image)
        assert found is not None and found.offset == offset and found.flags == 0x3


def test_header_outside_the_first_8k_or_unaligned_is_not_found() -> None:
    assert find_header(bytes(8192 - 8) + header(0x3) + bytes(64)) is None  # would end past 8 KiB
    assert find_header(bytes(8192) + header(0x3)) is None
    assert find_header(bytes(2) + header(0x3) + bytes(64)) is None  # not 32-bit aligned
    assert find_header(b"\x90" * 100) is None
    assert find_header(b"") is None


def test_bad_checksum_is_refused_with_the_offset_and_the_right_value() -> None:
    with pytest.raises(ImageError, match=r"offset 0x10 has a bad checksum 0x12345678.*must be 0xe4524ffb") as info:
        find_header(bytes(16) + header(0x3, checksum=0x12345678) + bytes(32), "k.elf")
    assert info.value.path == "k.elf"


def test_a_stray_magic_before_the_real_header_is_skipped() -> None:
    image = header(0x3, checksum=0) + bytes(4) + header(0x2) + bytes(32)
    found = find_header(image)
    assert found is not None and found.offset == 16 and found.flags == 0x2


@pytest.mark.parametrize("bit", [3, 4, 8, 15])
def test_an_unknown_required_flag_is_refused(bit: int) -> None:
    with pytest.raises(ImageError, match=rf"feature bit\(s\) {bit}\b"):
        find_header(header(1 << bit) + bytes(64))


def test_unknown_optional_flags_and_the_video_preference_are_accepted() -> None:
    found = find_header(header((1 << 20) | (1 << 2), *[0] * 5, 1, 80, 25, 0) + bytes(16))
    assert found is not None and found.wants_video_mode and (found.width, found.height) == (80, 25)


def test_a_header_cut_short_by_its_flags_is_refused() -> None:
    with pytest.raises(ImageError, match="needs 32 bytes"):
        find_header(header(1 << 16, 0x100000, 0x100000))  # kludge fields missing


# --- ELF kernels ---------------------------------------------------------------------

ELF_KERNEL = """
    .section .multiboot, "a"
    .balign 4
    .long 0x1BADB002, 0x3, -(0x1BADB002 + 0x3)
    .text
    .globl _start
_start:
    cli
    hlt
    .data
data_marker:
    .ascii "DATA-SEGMENT"
    .bss
bss_area:
    .skip 0x2000
"""

ELF_SCRIPT = """
ENTRY(_start)
SECTIONS {{
    . = {base};
    .text : AT({load}) {{ *(.multiboot) *(.text) }}
    .data : {{ *(.data) }}
    .bss : {{ *(.bss) }}
    /DISCARD/ : {{ *(.note*) }}
}}
"""


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def build_elf(tmp_path: Path) -> Callable[..., bytes]:
    """Assemble and link a kernel: 32-bit unless told otherwise, at `base`, loaded at `load`."""

    def build(source: str = ELF_KERNEL, base: int = 0x100000, load: int | None = None, bits: int = 32) -> bytes:
        (tmp_path / "k.S").write_text(source)
        (tmp_path / "k.ld").write_text(ELF_SCRIPT.format(base=hex(base), load=hex(base if load is None else load)))
        _run("as", f"--{bits}", "-o", str(tmp_path / "k.o"), str(tmp_path / "k.S"))
        _run("ld", "-m", "elf_i386" if bits == 32 else "elf_x86_64", "-z", "noexecstack", "-z",
             "max-page-size=0x1000", "-T", str(tmp_path / "k.ld"), "-o", str(tmp_path / "k.elf"), str(tmp_path / "k.o"))
        return (tmp_path / "k.elf").read_bytes()

    return build


def symbol(image: bytes, name: str) -> int:
    table = ELFFile(io.BytesIO(image)).get_section_by_name(".symtab")
    return table.get_symbol_by_name(name)[0]["st_value"]


def test_elf_segments_load_at_their_physical_addresses_with_bss_zeroed(mem: GuestMemory,
                                                                      build_elf: Callable[..., bytes]) -> None:
    image = build_elf()
    mem.fill(0x100000, 0x10000, 0xAA)  # leftovers the loader must clear
    state = load_multiboot(mem, image, "k.elf")
    start, data, bss = symbol(image, "_start"), symbol(image, "data_marker"), symbol(image, "bss_area")
    assert state.regs["rip"] == start and start >= 0x100000
    assert mem.read(start, 2) == b"\xfa\xf4"
    assert mem.read(data, 12) == b"DATA-SEGMENT"
    assert mem.read(bss, 0x2000) == bytes(0x2000)
    assert mem.read_u32(0x100000) == MAGIC  # the header came along with .text
    assert mem.read(bss + 0x2000, 16) == b"\xaa" * 16  # nothing beyond p_memsz was touched


def test_a_higher_half_kernel_is_entered_at_the_physical_entry(mem: GuestMemory,
                                                               build_elf: Callable[..., bytes]) -> None:
    image = build_elf(base=0xC0100000, load=0x100000)
    state = load_multiboot(mem, image, "k.elf")
    assert symbol(image, "_start") >= 0xC0100000
    assert state.regs["rip"] == symbol(image, "_start") - 0xC0000000
    assert mem.read(state.regs["rip"], 2) == b"\xfa\xf4"


def test_elf64_is_refused(mem: GuestMemory, build_elf: Callable[..., bytes]) -> None:
    image = build_elf(bits=64)
    with pytest.raises(ImageError, match=r"64-bit ELF file; a multiboot .*32-bit"):
        load_multiboot(mem, image, "k64.elf")


def test_an_elf_for_another_machine_is_refused(mem: GuestMemory, build_elf: Callable[..., bytes]) -> None:
    image = bytearray(build_elf())
    struct.pack_into("<H", image, 18, 40)  # e_machine = EM_ARM
    with pytest.raises(ImageError, match=r"for EM_ARM .*not for x86"):
        load_multiboot(mem, bytes(image), "arm.elf")


def test_segments_outside_ram_or_over_the_info_area_are_refused(mem: GuestMemory,
                                                               build_elf: Callable[..., bytes]) -> None:
    with pytest.raises(ImageError, match=r"outside the guest's 4096 KiB of RAM"):
        load_multiboot(mem, build_elf(base=0x400000), "high.elf")
    with pytest.raises(ImageError, match=r"overlaps the multiboot information"):
        load_multiboot(mem, build_elf(base=0x9000), "low.elf")
    with pytest.raises(ImageError, match=r"overlaps the reserved hole"):
        load_multiboot(mem, build_elf(base=0xA0000), "vga.elf")
    with pytest.raises(ImageError, match=r"overlaps the GDT and IDT"):
        load_multiboot(mem, build_elf(base=0x600), "gdt.elf")


def test_an_image_without_a_header_is_refused(mem: GuestMemory) -> None:
    with pytest.raises(ImageError, match="no multiboot header"):
        load_multiboot(mem, b"\x90" * 64, "flat.bin")


def test_a_headered_non_elf_without_address_fields_is_refused(mem: GuestMemory) -> None:
    with pytest.raises(ImageError, match="not ELF, and header flag 16"):
        load_multiboot(mem, header(0x3) + b"\xf4" * 16, "raw.bin")


def test_a_mangled_elf_is_refused_with_an_image_error(mem: GuestMemory, build_elf: Callable[..., bytes]) -> None:
    image = bytearray(build_elf())
    image[4] = 7  # EI_CLASS: neither 32 nor 64
    with pytest.raises(ImageError, match="not a valid ELF file"):
        load_multiboot(mem, bytes(image), "bad.elf")


# --- a.out kludge -------------------------------------------------------------------

KLUDGE = 1 << 16
CODE = b"\xfa\xf4"  # cli; hlt


def kludge_image(load: int = 0x200000, prefix: int = 0, bss: int = 0x1000, entry_offset: int = 0,
                 **overrides: int) -> bytes:
    """[prefix zero bytes][header 32 bytes][code][payload]: load_addr is where the header starts."""
    payload = b"PAYLOAD!" * 4
    size = 32 + len(CODE) + len(payload)
    fields = {"header_addr": load, "load_addr": load, "load_end_addr": load + size,
              "bss_end_addr": load + size + bss, "entry_addr": load + 32 + entry_offset}
    fields.update(overrides)
    return bytes(prefix) + header(KLUDGE | 0x3, *fields.values()) + CODE + payload


def test_kludge_loads_where_the_header_says_and_zeroes_bss(mem: GuestMemory) -> None:
    image = kludge_image()
    mem.fill(0x200000, 0x3000, 0xAA)
    state = load_multiboot(mem, image, "k.bin")
    assert state.regs["rip"] == 0x200020
    assert mem.read(0x200000, len(image)) == image
    assert mem.read(0x200000 + len(image), 0x1000) == bytes(0x1000)
    assert mem.read_u8(0x200000 + len(image) + 0x1000) == 0xAA


def test_kludge_maps_file_offsets_through_header_addr(mem: GuestMemory) -> None:
    # The header at file offset 64 is to land at 0x300010, so file offset 48
    # is load_addr 0x300000: the first 48 bytes of the file are not loaded.
    image = bytes(48) + b"SKIPPED?" * 2 + header(KLUDGE, 0x300010, 0x300000, 0, 0, 0x300010 + 32) + CODE
    state = load_multiboot(mem, image, "k.bin")
    assert state.regs["rip"] == 0x300030
    assert mem.read(0x300000, 16) == b"SKIPPED?" * 2  # load_end_addr 0: the rest of the file
    assert mem.read(0x300030, 2) == CODE
    assert mem.read(0x300000 - 16, 16) == bytes(16)


@pytest.mark.parametrize(("overrides", "problem"), [
    ({"load_addr": 0x200100}, "load_addr 0x200100 is above header_addr"),
    ({"load_addr": 0x1FFF00}, "256 bytes before the start of the file"),
    ({"load_end_addr": 0x200000 + 4096}, "the file has only"),
    ({"load_end_addr": 0x200008}, "ends before the header"),
    ({"bss_end_addr": 0x200010}, "bss_end_addr 0x200010 is below"),
    ({"entry_addr": 0x100000}, "entry_addr 0x100000 is outside the loaded image"),
    ({"entry_addr": 0x200000 + 32 + 2 + 32}, "is outside the loaded image"),  # in the bss
])
def test_kludge_fields_are_validated(mem: GuestMemory, overrides: dict[str, int], problem: str) -> None:
    with pytest.raises(ImageError, match=problem):
        load_multiboot(mem, kludge_image(**overrides), "k.bin")


def test_kludge_bss_beyond_ram_is_refused(mem: GuestMemory) -> None:
    with pytest.raises(ImageError, match="outside the guest's"):
        load_multiboot(mem, kludge_image(load=0x3FF000, bss=0x10000), "k.bin")


# --- what the kernel is handed ---------------------------------------------------------


def read_cstring(mem: GuestMemory, addr: int) -> str:
    data = mem.read(addr, 4096)
    return data[:data.index(b"\0")].decode()


def decode_mmap(mem: GuestMemory, addr: int, length: int) -> list[tuple[int, int, int]]:
    entries, end = [], addr + length
    while addr < end:
        size, base, size_bytes, kind = struct.unpack("<IQQI", mem.read(addr, 24))
        entries.append((base, size_bytes, kind))
        addr += size + 4  # size counts the bytes after itself
    return entries


def test_info_structure_reads_back(mem: GuestMemory) -> None:
    state = load_multiboot(mem, kludge_image(), "kern.bin", cmdline="root=/dev/x quiet", loader_name="tester")
    info = state.regs["rbx"]
    assert info == INFO_ADDR
    flags, mem_lower, mem_upper = struct.unpack("<III", mem.read(info, 12))
    assert flags & 0b1001000101 == 0b1001000101  # memory, cmdline, mmap, loader name
    assert flags & (1 << 11 | 1 << 12) == 0  # no VBE or framebuffer information
    assert (mem_lower, mem_upper) == (639, 3072)  # below the 0x9FC00 reserve; 4 MiB - 1 MiB
    cmdline_addr, mods_count = struct.unpack("<II", mem.read(info + 16, 8))
    assert read_cstring(mem, cmdline_addr) == "kern.bin root=/dev/x quiet"
    assert mods_count == 0
    assert read_cstring(mem, mem.read_u32(info + 64)) == "tester"
    mmap_length, mmap_addr = struct.unpack("<II", mem.read(info + 44, 8))
    assert decode_mmap(mem, mmap_addr, mmap_length) == [
        (0x0, 0x9FC00, 1),
        (0x9FC00, 0x400, 2),
        (0xA0000, 0x60000, 2),
        (0x100000, 0x300000, 1),
    ]
    assert cmdline_addr < 0x9FC00 and mmap_addr >= INFO_ADDR


def test_memory_size_follows_the_ram() -> None:
    mem = GuestMemory([(0, 16 << 20)])
    try:
        load_multiboot(mem, kludge_image(), "kern.bin")
        assert mem.read_u32(INFO_ADDR + 8) == 15 * 1024
        mmap = decode_mmap(mem, mem.read_u32(INFO_ADDR + 48), mem.read_u32(INFO_ADDR + 44))
        assert mmap[-1] == (0x100000, 15 << 20, 1)
        assert read_cstring(mem, mem.read_u32(INFO_ADDR + 16)) == "kern.bin"  # no --append: just the name
    finally:
        mem.close()


def test_command_line_limits(mem: GuestMemory) -> None:
    with pytest.raises(ImageError, match="NUL"):
        load_multiboot(mem, kludge_image(), "k.bin", cmdline="a\0b")
    with pytest.raises(ImageError, match="at most 4095"):
        load_multiboot(mem, kludge_image(), "k.bin", cmdline="x" * 5000)


def test_the_command_line_carries_the_bytes_the_user_gave(mem: GuestMemory) -> None:
    """A file name or --append that is not UTF-8 reaches Python as surrogate escapes; the kernel gets the bytes."""
    path, cmdline = os.fsdecode(b"/tmp/k\xff.bin"), os.fsdecode(b"a\xffb")
    load_multiboot(mem, kludge_image(), path, cmdline=cmdline)
    text = mem.read(mem.read_u32(INFO_ADDR + 16), 64)
    assert text.startswith(b"/tmp/k\xff.bin a\xffb\0")


def test_entry_state_follows_the_specification(mem: GuestMemory) -> None:
    mem.fill(0x500, 0x1000, 0xCC)  # the tables must be written, not found zeroed
    state = load_multiboot(mem, kludge_image(), "k.bin")
    assert state.mode is Mode.PROTECTED
    assert state.regs["rax"] == EAX_MAGIC and state.regs["rbx"] == INFO_ADDR
    assert state.regs["rsp"] == 0x9FC00
    assert not state.regs["rflags"] & (RFLAGS_IF | RFLAGS_VM) and state.regs["rflags"] == 0x2
    assert state.cr0 & CR0_PE and not state.cr0 & CR0_PG
    cs = state.segments["cs"]
    assert cs.base == 0 and cs.limit == 0xFFFFFFFF and cs.db and cs.type & 0x8  # 32-bit code
    for name in ("ds", "es", "fs", "gs", "ss"):
        seg = state.segments[name]
        assert seg.base == 0 and seg.limit == 0xFFFFFFFF and not seg.type & 0x8, name
    # The GDT the selectors come from is really there, with the ABI's descriptors.
    assert (state.gdt.base, state.gdt.limit) == (0x500, 39)
    code = decode_descriptor(mem.read(0x500 + cs.selector, 8))
    assert code.access == 0x9A and code.effective_limit == 0xFFFFFFFF
    assert (state.idt.base, state.idt.limit) == (0x528, 0x7FF) and mem.read(0x528, 0x800) == bytes(0x800)


def test_the_screen_is_left_cleared(mem: GuestMemory) -> None:
    mem.fill(0xB8000, 4000, 0x41)
    load_multiboot(mem, kludge_image(), "k.bin")
    assert mem.read(0xB8000, 4000) == b"\x20\x07" * 2000


def test_a_video_mode_request_is_noted_not_refused(mem: GuestMemory) -> None:
    image = header(KLUDGE | 1 << 2, 0x200000, 0x200000, 0, 0, 0x200030, 0, 1024, 768, 32) + CODE
    notes: list[str] = []
    state = load_multiboot(mem, image, "fb.bin", note=notes.append)
    assert state.regs["rip"] == 0x200030
    assert len(notes) == 1 and "1024x768x32" in notes[0] and "text mode" in notes[0]


# --- the test kernels in guests/multiboot -----------------------------------------------


@pytest.fixture(scope="module")
def test_kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mb")
    _run("make", "-s", "-C", str(REPO / "guests" / "multiboot"), f"B={out}")
    return out


def test_the_bundled_elf_kernel_loads(mem: GuestMemory, test_kernels: Path) -> None:
    image = (test_kernels / "mb_hello.elf").read_bytes()
    found = find_header(image)
    assert found is not None and not found.aout_kludge and found.offset < 8192
    state = load_multiboot(mem, image, "mb_hello.elf", cmdline="hello")
    assert state.regs["rip"] == symbol(image, "_start")
    assert read_cstring(mem, mem.read_u32(INFO_ADDR + 16)) == "mb_hello.elf hello"


def test_the_bundled_kludge_kernel_loads_at_2mib(mem: GuestMemory, test_kernels: Path) -> None:
    image = (test_kernels / "mb_kludge.bin").read_bytes()
    symbols = (test_kernels / "mb_kludge.elf").read_bytes()
    found = find_header(image)
    assert found is not None and found.aout_kludge and found.load_addr == 0x200000
    mem.fill(symbol(symbols, "__bss_start"), 64, 0xEE)
    state = load_multiboot(mem, image, "mb_kludge.bin")
    assert state.regs["rip"] == symbol(symbols, "_start")
    assert mem.read(0x200000, len(image)) == image
    assert mem.read(symbol(symbols, "__bss_start"), 64) == bytes(64)
