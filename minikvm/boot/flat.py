"""Flat binaries: the image is copied to the load address and entered there.

Real mode follows ABI.md (segments 0, IP = entry); protected and long mode get
the ABI's GDT at 0x500 and an empty IDT, so a guest that reloads its segment
registers or takes an exception finds sane tables.
"""

from __future__ import annotations

from ..arch.x86.descriptors import (
    ACCESS_CODE_RING0,
    ACCESS_CODE_RING3,
    ACCESS_DATA_RING0,
    ACCESS_DATA_RING3,
    FLAGS_32BIT_4K,
    FLAGS_64BIT_CODE,
    encode_descriptor,
)
from ..arch.x86.paging import PAGE_4K, identity_map_long, long_mode_tables_size
from ..arch.x86.state import BootState, DescriptorTable, Mode, long_mode, protected_mode, real_mode
from ..memory import GuestMemory
from . import layout
from .errors import ImageError


def abi_gdt(code_flags: int = FLAGS_32BIT_4K) -> bytes:
    """ABI.md's five descriptors: null, ring-0 code/data, ring-3 code/data, flat 4 GiB."""
    data_flags = FLAGS_32BIT_4K
    return b"".join([
        bytes(8),
        encode_descriptor(0, 0xFFFFF, ACCESS_CODE_RING0, code_flags),
        encode_descriptor(0, 0xFFFFF, ACCESS_DATA_RING0, data_flags),
        encode_descriptor(0, 0xFFFFF, ACCESS_CODE_RING3, code_flags),
        encode_descriptor(0, 0xFFFFF, ACCESS_DATA_RING3, data_flags),
    ])


def default_load(mode: Mode) -> int:
    """Where an image goes without --load (ABI.md), in every mode the --paging layout's included."""
    if mode is Mode.REAL:
        return layout.REAL_LOAD
    return layout.PAGING_LOAD if mode is Mode.PAGING else layout.PM_LOAD


def check_fits(path: str, size: int, load: int, limit: int, what: str) -> None:
    """Refuse an image of `size` bytes that does not fit from `load` up to `limit` (`what` is there)."""
    if not size:
        raise ImageError(path, "the file is empty: there is no guest code to run")
    if load < 0 or load + size > limit:
        raise ImageError(path, f"the image is {size} bytes: it does not fit at load address "
                         f"{load:#x} below {limit:#x} ({what})")


def load_flat(mem: GuestMemory, image: bytes, mode: Mode, path: str, load: int | None = None,
              entry: int | None = None, cr0: int | None = None, cr4: int | None = None) -> BootState:
    """Copy a flat binary to `load` and return the state that enters it at `entry` in `mode`.

    `cr0`/`cr4` replace the default control registers of protected and long
    mode (e.g. cr4=0 starts without SSE enabled, as the original VMM did).
    """
    load = default_load(mode) if load is None else load
    entry = load if entry is None else entry
    ram = mem.size
    if mode is Mode.REAL:
        check_fits(path, len(image), load, ram, f"{ram // 1024} KiB of guest RAM")
        if entry >= min(0x100000, ram):
            raise ImageError(path, f"entry {entry:#x} is outside guest RAM and real mode's 1 MiB reach "
                             f"({ram // 1024} KiB of RAM)")
        mem.write(load, image)
        # CS:IP reaching `entry`: a 64 KiB-aligned segment keeps IP small and simple.
        segment = (entry >> 4) & 0xF000
        return real_mode(entry - (segment << 4), segment=segment)
    if mode is Mode.PROTECTED:
        tables_end = layout.IDT_BASE + layout.IDT32_LIMIT + 1
        if load < tables_end:
            raise ImageError(path, f"load address {load:#x} overlaps the GDT/IDT at "
                             f"{layout.GDT_BASE:#x}-{tables_end:#x}")
        # Without paging, 32-bit code reaches only the first 4 GiB, however much RAM there is.
        reach = min(ram, 1 << 32)
        check_fits(path, len(image), load, reach, f"{ram // 1024} KiB of guest RAM"
                   if reach == ram else "4 GiB: what 32-bit code reaches without paging")
        if entry >= reach:
            raise ImageError(path, f"entry {entry:#x} is outside guest RAM ({ram // 1024} KiB; paging is off)"
                             if reach == ram else f"entry {entry:#x} is beyond 4 GiB, out of 32-bit code's reach")
        gdt = abi_gdt()
        mem.write(layout.GDT_BASE, gdt)
        mem.fill(layout.IDT_BASE, layout.IDT32_LIMIT + 1)
        mem.write(load, image)
        return protected_mode(entry, esp=min(ram, 1 << 32) & 0xFFFFFFF0,
                              gdt=DescriptorTable(layout.GDT_BASE, len(gdt) - 1),
                              idt=DescriptorTable(layout.IDT_BASE, layout.IDT32_LIMIT), cr0=cr0, cr4=cr4)
    if mode is Mode.LONG:
        # Page tables and the (empty) IDT go at the top of RAM, out of the image's way.
        idt_base = (ram - PAGE_4K) & ~(PAGE_4K - 1)
        tables_base = idt_base - long_mode_tables_size(ram)
        check_fits(path, len(image), load, tables_base, "the page tables at the top of guest RAM")
        if entry >= ram:
            raise ImageError(path, f"entry {entry:#x} is not mapped: RAM ({ram // 1024} KiB) is identity-mapped")
        gdt = abi_gdt(FLAGS_64BIT_CODE)
        mem.write(layout.GDT_BASE, gdt)
        mem.fill(idt_base, layout.IDT64_LIMIT + 1)
        cr3 = identity_map_long(mem, tables_base, ram)
        mem.write(load, image)
        return long_mode(entry, rsp=layout.LONG_STACK, gdt=DescriptorTable(layout.GDT_BASE, len(gdt) - 1),
                         idt=DescriptorTable(idt_base, layout.IDT64_LIMIT), cr3=cr3, cr0=cr0, cr4=cr4)
    raise ImageError(path, f"{mode.label} guests need the --paging layout loader")
