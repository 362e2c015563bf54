"""Multiboot (version 1, specification 0.6.96) kernels: ELF32, or any image with the a.out kludge.

What the boot loader promises the kernel, and where minikvm puts things:

- kernel: ELF — every PT_LOAD segment at its physical address (p_paddr),
  memory beyond p_filesz zeroed. With header flag 16 (the "a.out kludge")
  the header's address fields rule instead: the file from load_addr to
  load_end_addr, zeroed on to bss_end_addr.
- GDT: the ABI's, at 0x500 (0x08 flat 32-bit code, 0x10 flat data).
- IDT: the ABI's empty one at 0x528, limit 0x7FF. The spec leaves IDTR
  undefined; an empty table turns a stray exception into a triple fault
  that the fault explainer can name.
- information structure at MB_INFO_ADDR (0x9000), followed by the memory
  map, the loader name and the command line it points to.
- EAX = 0x2BADB002, EBX = MB_INFO_ADDR.
- ESP = 0x9FC00, the top of available conventional memory. The spec leaves
  ESP undefined (a kernel sets up its own stack first); this one is usable.
- CR0.PE set, CR0.PG clear, x87/SSE usable as for every minikvm 32-bit
  guest; EFLAGS = 0x2 (IF=0, VM=0); A20 on (KVM never masks it).
- screen: 80x25 colour text, cleared to grey-on-black spaces, as a BIOS
  leaves it.

A kernel may not load over the GDT/IDT, the information area, or the
reserved hole 0x9FC00-0x100000 (BIOS data, VGA memory, ROMs) that the memory
map tells it about.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..arch.x86.state import BootState, DescriptorTable, protected_mode
from ..devices import vga
from ..memory import GuestMemory
from . import layout
from .errors import ImageError
from .flat import abi_gdt

ELF_MAGIC = b"\x7fELF"  # the first bytes of every ELF file
HEADER_MAGIC = 0x1BADB002
BOOTLOADER_MAGIC = 0x2BADB002  # EAX at the kernel's first instruction
HEADER_SEARCH = 8192  # the header lies wholly in the file's first 8 KiB ...
HEADER_ALIGN = 4  # ... at a 32-bit aligned offset

# Header flags. Bits 0-15 are requirements: a loader that cannot meet one must
# refuse the kernel. Bits 16-31 are optional features a loader may ignore.
HF_PAGE_ALIGN = 1 << 0  # modules on 4 KiB boundaries (minikvm loads no modules: met)
HF_MEMORY_INFO = 1 << 1  # mem_lower/mem_upper/mmap wanted (always given: met)
HF_VIDEO_MODE = 1 << 2  # a preferred video mode (a preference; the text mode stays)
HF_AOUT_KLUDGE = 1 << 16  # the header's address fields say where to load
HF_REQUIRED_MASK = 0xFFFF
HF_UNDERSTOOD = HF_PAGE_ALIGN | HF_MEMORY_INFO | HF_VIDEO_MODE

HEADER_SIZE = 12  # magic, flags, checksum
HEADER_SIZE_KLUDGE = 32  # + header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr
HEADER_SIZE_VIDEO = 48  # + mode_type, width, height, depth

# Info structure flags (which fields are valid).
MBI_MEMORY = 1 << 0
MBI_CMDLINE = 1 << 2
MBI_MODS = 1 << 3
MBI_MMAP = 1 << 6
MBI_LOADER_NAME = 1 << 9

MMAP_AVAILABLE = 1
MMAP_RESERVED = 2

# Where minikvm builds what it hands the kernel: below 1 MiB, above the
# GDT/IDT, away from the kernels that all load at 1 MiB or more.
MB_INFO_ADDR = 0x9000
MB_INFO_SIZE = 116  # up to the framebuffer fields (0.6.96); minikvm leaves those 0
MB_STACK = 0x9FC00  # ESP: the top of available conventional memory
MAX_CMDLINE = 4095  # bytes, without the NUL (Linux takes 2048): keeps the info area a few KiB long

# The PC's memory holes, as the memory map reports them.
EBDA_START = 0x9FC00  # extended BIOS data area: 1 KiB below 640 KiB
LOW_HOLE_START = 0xA0000  # VGA memory, then option and system ROMs
HIGH_MEMORY = 0x100000

EM_386 = "EM_386"
_MMAP_ENTRY = struct.Struct("<IQQI")  # size (of the rest: 20), base_addr, length, type


@dataclass(frozen=True)
class MultibootHeader:
    offset: int  # in the file
    flags: int
    checksum: int
    header_addr: int = 0
    load_addr: int = 0
    load_end_addr: int = 0
    bss_end_addr: int = 0
    entry_addr: int = 0
    mode_type: int = 0
    width: int = 0
    height: int = 0
    depth: int = 0

    @property
    def aout_kludge(self) -> bool:
        return bool(self.flags & HF_AOUT_KLUDGE)

    @property
    def wants_video_mode(self) -> bool:
        return bool(self.flags & HF_VIDEO_MODE)


def find_header(image: bytes, path: str = "<image>") -> MultibootHeader | None:
    """The multiboot header, or None when the image has none.

    As GRUB does, the first magic with a good checksum wins, so a stray magic
    number in code before the header is harmless; when every magic found has
    a bad checksum, the image is refused and the first one is named.
    """
    bad: tuple[int, int, int] | None = None  # (offset, flags, checksum) of the first bad header
    limit = min(len(image), HEADER_SEARCH) - HEADER_SIZE
    for offset in range(0, limit + 1, HEADER_ALIGN):
        magic, flags, checksum = struct.unpack_from("<III", image, offset)
        if magic != HEADER_MAGIC:
            continue
        if (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return _parse_header(image, path, offset, flags, checksum)
        if bad is None:
            bad = (offset, flags, checksum)
    if bad is not None:
        offset, flags, checksum = bad
        good = -(HEADER_MAGIC + flags) & 0xFFFFFFFF
        raise ImageError(path, f"multiboot header at file offset {offset:#x} has a bad checksum "
                         f"{checksum:#010x} (with flags {flags:#010x} it must be {good:#010x}, so that "
                         "magic + flags + checksum = 0)")
    return None


def _parse_header(image: bytes, path: str, offset: int, flags: int, checksum: int) -> MultibootHeader:
    unknown = flags & HF_REQUIRED_MASK & ~HF_UNDERSTOOD
    if unknown:
        bits = ", ".join(str(b) for b in range(16) if unknown >> b & 1)
        raise ImageError(path, f"multiboot header flags {flags:#010x} require feature bit(s) {bits}, "
                         "which minikvm does not provide (bits 0-15 are requirements a loader must "
                         "refuse when it cannot meet them)")
    size = HEADER_SIZE_VIDEO if flags & HF_VIDEO_MODE else \
        HEADER_SIZE_KLUDGE if flags & HF_AOUT_KLUDGE else HEADER_SIZE
    end = offset + size
    if end > min(len(image), HEADER_SEARCH):
        raise ImageError(path, f"multiboot header at file offset {offset:#x} needs {size} bytes for its "
                         f"flags {flags:#010x}, but they run past "
                         f"{'the end of the file' if end > len(image) else 'the first 8192 bytes'}")
    fields = struct.unpack_from(f"<{(size - HEADER_SIZE) // 4}I", image, offset + HEADER_SIZE)
    return MultibootHeader(offset, flags, checksum, *fields)


@dataclass(frozen=True)
class _Segment:
    """A piece of the kernel: `data` at `addr`, zeroed up to `memsz`."""

    addr: int
    data: bytes
    memsz: int
    what: str

    @property
    def end(self) -> int:
        return self.addr + self.memsz


def load_multiboot(mem: GuestMemory, image: bytes, path: str, cmdline: str = "", loader_name: str = "minikvm",
                   note: Callable[[str], None] | None = None) -> BootState:
    """Load a multiboot kernel, build its info structure, and return the entry state.

    The kernel's command line is `path`, a space and `cmdline`: GRUB and
    QEMU hand the kernel its own file name as the first word, and kernels
    written for them skip it. `note` hears about things that were ignored.
    """
    header = find_header(image, path)
    if header is None:
        raise ImageError(path, f"no multiboot header (magic {HEADER_MAGIC:#010x}) in the first "
                         f"{HEADER_SEARCH} bytes")
    if header.wants_video_mode and note is not None:
        note(f"{path}: the kernel asks for video mode type {header.mode_type} "
             f"({header.width}x{header.height}x{header.depth}); minikvm keeps 80x25 text mode "
             "and reports no video information (flags bits 11/12 clear)")
    if header.aout_kludge:
        segments, entry = _kludge_segments(image, path, header)
    else:
        segments, entry = _elf_segments(image, path)

    info = _build_info(mem, path, cmdline, loader_name)
    forbidden = [
        (layout.GDT_BASE, layout.IDT_BASE + layout.IDT32_LIMIT + 1, "the GDT and IDT minikvm sets up"),
        (MB_INFO_ADDR, MB_INFO_ADDR + len(info), "the multiboot information minikvm builds"),
        (EBDA_START, HIGH_MEMORY, "the reserved hole below 1 MiB (BIOS data, VGA memory, ROMs)"),
    ]
    for seg in segments:
        if seg.memsz == 0:
            continue
        if not mem.contains(seg.addr, seg.memsz):
            raise ImageError(path, f"{seg.what} at {seg.addr:#x}-{seg.end:#x} is outside the guest's "
                             f"{mem.size // 1024} KiB of RAM (give it more with --memory)")
        for start, end, name in forbidden:
            if seg.addr < end and start < seg.end:
                raise ImageError(path, f"{seg.what} at {seg.addr:#x}-{seg.end:#x} overlaps {name} "
                                 f"at {start:#x}-{end:#x}")

    gdt = abi_gdt()
    mem.write(layout.GDT_BASE, gdt)
    mem.fill(layout.IDT_BASE, layout.IDT32_LIMIT + 1)
    mem.write(MB_INFO_ADDR, info)
    if mem.contains(vga.TEXT_BASE, vga.TEXT_BYTES):
        mem.write(vga.TEXT_BASE, vga.blank_text_buffer())
    for seg in segments:
        mem.write(seg.addr, seg.data)
        mem.fill(seg.addr + len(seg.data), seg.memsz - len(seg.data))

    state = protected_mode(entry, esp=MB_STACK, gdt=DescriptorTable(layout.GDT_BASE, len(gdt) - 1),
                           idt=DescriptorTable(layout.IDT_BASE, layout.IDT32_LIMIT))
    state.regs["rax"] = BOOTLOADER_MAGIC
    state.regs["rbx"] = MB_INFO_ADDR
    return state


def _kludge_segments(image: bytes, path: str, h: MultibootHeader) -> tuple[list[_Segment], int]:
    """The image as the header's address fields describe it (flag 16)."""
    def refuse(problem: str) -> ImageError:
        return ImageError(path, f"multiboot header (a.out kludge): {problem}")

    if h.load_addr > h.header_addr:
        raise refuse(f"load_addr {h.load_addr:#x} is above header_addr {h.header_addr:#x}; "
                     "the header must be inside the loaded image")
    # header_addr is where the header's own bytes land: that ties file offsets to addresses.
    file_start = h.offset - (h.header_addr - h.load_addr)
    if file_start < 0:
        raise refuse(f"load_addr {h.load_addr:#x} would be {-file_start} bytes before the start of the file "
                     f"(the header at file offset {h.offset:#x} is to be at {h.header_addr:#x})")
    if h.load_end_addr == 0:
        load_end = h.load_addr + len(image) - file_start  # 0: the rest of the file
    else:
        load_end = h.load_end_addr
        if load_end < h.header_addr + HEADER_SIZE:
            raise refuse(f"load_end_addr {load_end:#x} ends before the header at {h.header_addr:#x} is loaded")
        if file_start + (load_end - h.load_addr) > len(image):
            raise refuse(f"load_addr-load_end_addr {h.load_addr:#x}-{load_end:#x} is "
                         f"{load_end - h.load_addr} bytes, but the file has only {len(image) - file_start} "
                         f"from offset {file_start:#x}")
    bss_end = load_end if h.bss_end_addr == 0 else h.bss_end_addr
    if bss_end < load_end:
        raise refuse(f"bss_end_addr {bss_end:#x} is below the end of the loaded image {load_end:#x}")
    if not h.load_addr <= h.entry_addr < load_end:
        raise refuse(f"entry_addr {h.entry_addr:#x} is outside the loaded image {h.load_addr:#x}-{load_end:#x}")
    data = image[file_start:file_start + load_end - h.load_addr]
    return [_Segment(h.load_addr, data, bss_end - h.load_addr, "the kernel image")], h.entry_addr


def _elf_segments(image: bytes, path: str) -> tuple[list[_Segment], int]:
    if not image.startswith(ELF_MAGIC):
        raise ImageError(path, "has a multiboot header but is not ELF, and header flag 16 (load addresses "
                         "in the header, the a.out kludge) is not set: minikvm cannot tell where to load it")
    from elftools.common.exceptions import ELFError  # only ELF kernels pay for pyelftools' import
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(image))
        if elf.elfclass != 32:
            raise ImageError(path, f"is a {elf.elfclass}-bit ELF file; a multiboot (v1) kernel is a 32-bit "
                             "ELF that starts in 32-bit protected mode (a 64-bit kernel needs a 32-bit "
                             "entry stub that switches to long mode, linked as ELF32)")
        if elf["e_machine"] != EM_386 or not elf.little_endian:
            raise ImageError(path, f"is an ELF file for {elf['e_machine']} ({elf.get_machine_arch()}), "
                             "not for x86 (EM_386)")
        if elf["e_type"] != "ET_EXEC":
            raise ImageError(path, f"is an ELF {elf['e_type']} file; a multiboot kernel is an executable "
                             "(ET_EXEC) linked at its load address")
        segments: list[_Segment] = []
        entry = elf["e_entry"]
        physical_entry = None
        for index, ph in enumerate(elf.iter_segments()):
            if ph["p_type"] != "PT_LOAD" or ph["p_memsz"] == 0:
                continue
            what = f"ELF segment {index}"
            offset, filesz, memsz, paddr, vaddr = (ph["p_offset"], ph["p_filesz"], ph["p_memsz"],
                                                   ph["p_paddr"], ph["p_vaddr"])
            if filesz > memsz:
                raise ImageError(path, f"{what} has more bytes in the file ({filesz}) than in memory ({memsz})")
            if offset + filesz > len(image):
                raise ImageError(path, f"{what} needs file bytes {offset:#x}-{offset + filesz:#x}, but the "
                                 f"file is {len(image)} bytes (truncated?)")
            segments.append(_Segment(paddr, image[offset:offset + filesz], memsz, what))
            # As GRUB 2 does: e_entry is virtual; a higher-half kernel links
            # vaddr != paddr, and with paging off the CPU must jump to the
            # physical copy of the entry point.
            if physical_entry is None and vaddr <= entry < vaddr + memsz:
                physical_entry = entry - vaddr + paddr
    except ELFError as err:
        raise ImageError(path, f"is not a valid ELF file: {err}") from None
    if not segments:
        raise ImageError(path, "has no loadable (PT_LOAD) segments")
    if physical_entry is None:
        raise ImageError(path, f"the entry point {entry:#x} is in none of the loadable segments")
    return segments, physical_entry


def memory_map(mem: GuestMemory) -> list[tuple[int, int, int]]:
    """(base, length, type) entries, sorted: RAM minus the PC's holes, and the holes as reserved."""
    entries = [(EBDA_START, LOW_HOLE_START - EBDA_START, MMAP_RESERVED),
               (LOW_HOLE_START, HIGH_MEMORY - LOW_HOLE_START, MMAP_RESERVED)]
    for region in mem.regions:
        for start, end in ((0, EBDA_START), (HIGH_MEMORY, 1 << 64)):
            base, limit = max(region.guest_addr, start), min(region.end, end)
            if base < limit:
                entries.append((base, limit - base, MMAP_AVAILABLE))
    return sorted(entries)


def _contiguous_ram_from(mem: GuestMemory, start: int, limit: int) -> int:
    end = start
    for region in mem.regions:
        if region.guest_addr <= end < region.end:
            end = region.end
    return min(end, limit) - start


def _build_info(mem: GuestMemory, path: str, cmdline: str, loader_name: str) -> bytes:
    """The info structure and everything it points to, as laid out at MB_INFO_ADDR."""
    # The bytes the user gave: a file name or an argument that is not UTF-8 reaches the kernel as it was.
    cmdline_bytes = os.fsencode(path) + (b" " + os.fsencode(cmdline) if cmdline else b"")
    if b"\0" in cmdline_bytes:
        raise ImageError(path, "the kernel command line contains a NUL character")
    if len(cmdline_bytes) > MAX_CMDLINE:
        raise ImageError(path, f"the kernel command line is {len(cmdline_bytes)} bytes; "
                         f"minikvm passes at most {MAX_CMDLINE}")
    mmap = b"".join(_MMAP_ENTRY.pack(_MMAP_ENTRY.size - 4, base, length, kind)
                    for base, length, kind in memory_map(mem))
    mmap_addr = MB_INFO_ADDR + MB_INFO_SIZE
    name_addr = mmap_addr + len(mmap)
    name = loader_name.encode() + b"\0"
    cmdline_addr = name_addr + len(name)

    # mem_lower counts up to the reserved EBDA, as INT 12h reports it on a PC,
    # so it agrees with the memory map; mem_upper is the RAM from 1 MiB on up
    # to the first hole (the spec's definition), in KiB.
    mem_lower = _contiguous_ram_from(mem, 0, EBDA_START) // 1024
    mem_upper = min(_contiguous_ram_from(mem, HIGH_MEMORY, 1 << 64) // 1024, 0xFFFFFFFF)  # a u32 of KiB
    info = bytearray(MB_INFO_SIZE)
    # GRUB sets the modules flag with a count of 0 too: kernels that walk the
    # module list without checking the flag then find it empty.
    flags = MBI_MEMORY | MBI_CMDLINE | MBI_MODS | MBI_MMAP | MBI_LOADER_NAME
    struct.pack_into("<III", info, 0, flags, mem_lower, mem_upper)
    struct.pack_into("<III", info, 16, cmdline_addr, 0, 0)  # cmdline, mods_count, mods_addr
    struct.pack_into("<II", info, 44, len(mmap), mmap_addr)
    struct.pack_into("<I", info, 64, name_addr)
    return bytes(info) + mmap + name + cmdline_bytes + b"\0"
