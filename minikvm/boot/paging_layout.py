"""The `--paging` layout of ABI.md: 32-bit protected mode with paging, as the 1K OS expects it.

Before the first instruction: the ABI's GDT at 0x500, 256 empty IDT gates at
0x528, a page directory at 0x100000 whose entries 0 and 512 map physical
0–4 MiB at virtual 0 and at 0x80000000 (the kernel runs in the upper alias,
its early code at the lower one), present+writable and supervisor-only, and
the image at its load address. The original VMM used 4 KiB pages from the
tables at 0x101000 and 0x102000; `pages="4m"` maps the same with two 4 MiB
PSE pages instead.

Unlike the original, x87/SSE are usable from the start (see ABI.md, "the SSE
trap"); `cr0=0x80000011, cr4=0` gives the original's raw state.
"""

from __future__ import annotations

from ..arch.x86.paging import PAGE_4K, map_32bit, map_32bit_pse
from ..arch.x86.registers import CR0_PE, CR0_PG, CR4_PAE, CR4_PSE
from ..arch.x86.state import CR4_SSE, BootState, DescriptorTable, protected_mode
from ..memory import GuestMemory
from . import layout
from .errors import ImageError
from .flat import abi_gdt

# Belong in boot/layout.py beside PAGING_LOAD and PAGING_ENTRY (ABI.md's table).
PAGING_DIRECTORY = 0x100000
PAGING_TABLES = (0x101000, 0x102000)
PAGING_SPAN = 4 * layout.MIB  # the physical memory the ABI maps, whatever the RAM size
PAGING_HIGH_ALIAS = 0x80000000
PAGING_MAPPINGS = ((0, 0, PAGING_SPAN), (PAGING_HIGH_ALIAS, 0, PAGING_SPAN))

PAGE_SIZES = ("4k", "4m")

_TABLES_END = layout.IDT_BASE + layout.IDT32_LIMIT + 1  # 0xD28: the GDT and IDT sit below


def _overlaps(start: int, length: int, other: int, other_length: int) -> bool:
    return start < other + other_length and other < start + length


def load_paging_abi(mem: GuestMemory, image: bytes, path: str, load: int | None = None, entry: int | None = None,
                    pages: str = "4k", cr0: int | None = None, cr4: int | None = None) -> BootState:
    """Build ABI.md's `--paging` machine in `mem` and return its boot state.

    Refuses (ImageError, before writing anything) an empty image, one that
    overlaps the GDT/IDT or the page tables or leaves guest RAM, an entry
    outside the two mapped windows, an unknown `pages`, and `cr0`/`cr4`
    overrides under which these tables cannot work (paging or protection off,
    PAE on, PSE off with 4 MiB pages).
    """
    load = layout.PAGING_LOAD if load is None else load
    entry = layout.PAGING_ENTRY if entry is None else entry
    size = pages.lower()
    if size not in PAGE_SIZES:
        raise ImageError(path, f"page size '{pages}' is not one of {', '.join(PAGE_SIZES)}")
    big = size == "4m"
    tables = [(PAGING_DIRECTORY, PAGE_4K)] + ([] if big else [(t, PAGE_4K) for t in PAGING_TABLES])
    tables_start, tables_end = tables[0][0], tables[-1][0] + PAGE_4K

    if not image:
        raise ImageError(path, "the file is empty: there is no guest code to run")
    if load < 0:
        raise ImageError(path, f"load address {load:#x} is negative")
    if _overlaps(load, len(image), layout.GDT_BASE, _TABLES_END - layout.GDT_BASE):
        raise ImageError(path, f"the image at {load:#x}-{load + len(image):#x} overlaps the GDT/IDT at "
                         f"{layout.GDT_BASE:#x}-{_TABLES_END:#x}")
    if _overlaps(load, len(image), tables_start, tables_end - tables_start):
        raise ImageError(path, f"the image at {load:#x}-{load + len(image):#x} overlaps the page tables at "
                         f"{tables_start:#x}-{tables_end:#x}")
    if not mem.contains(tables_start, tables_end - tables_start):
        raise ImageError(path, f"guest RAM ({mem.size // 1024} KiB) does not reach the page tables at "
                         f"{tables_start:#x}-{tables_end:#x} that the --paging layout needs")
    if not mem.contains(load, len(image)):
        raise ImageError(path, f"the image is {len(image)} bytes: it does not fit at load address {load:#x} "
                         f"in {mem.size // 1024} KiB of guest RAM")
    window = next(((virt, phys) for virt, phys, span in PAGING_MAPPINGS if virt <= entry < virt + span), None)
    if window is None:
        raise ImageError(path, f"entry {entry:#x} is not mapped: the --paging layout maps only "
                         f"0x0-{PAGING_SPAN - 1:#x} and {PAGING_HIGH_ALIAS:#x}-"
                         f"{PAGING_HIGH_ALIAS + PAGING_SPAN - 1:#x}")
    entry_phys = entry - window[0] + window[1]
    if not mem.contains(entry_phys):
        raise ImageError(path, f"entry {entry:#x} maps to physical {entry_phys:#x}, outside guest RAM")
    cr4 = (CR4_SSE | (CR4_PSE if big else 0)) if cr4 is None else cr4
    if cr0 is not None and cr0 & (CR0_PE | CR0_PG) != CR0_PE | CR0_PG:
        raise ImageError(path, f"CR0 {cr0:#x} leaves protection (PE) or paging (PG) off: the --paging layout "
                         f"enters at a virtual address")
    if cr4 & CR4_PAE:
        raise ImageError(path, f"CR4 {cr4:#x} sets PAE, but the --paging layout builds 32-bit page tables")
    if big and not cr4 & CR4_PSE:
        raise ImageError(path, f"CR4 {cr4:#x} leaves PSE off: without it the CPU ignores the PDEs' PS bit "
                         f"and 4 MiB pages do not work")

    gdt = abi_gdt()
    mem.write(layout.GDT_BASE, gdt)
    mem.fill(layout.IDT_BASE, layout.IDT32_LIMIT + 1)  # 256 zero (not present) gates
    if big:
        cr3 = map_32bit_pse(mem, PAGING_DIRECTORY, PAGING_MAPPINGS)
    else:
        cr3 = map_32bit(mem, PAGING_DIRECTORY, list(PAGING_TABLES), PAGING_MAPPINGS)
    mem.write(load, image)
    # ABI: "all other registers 0", ESP included; the kernel sets up its own stack.
    return protected_mode(entry, esp=0, gdt=DescriptorTable(layout.GDT_BASE, len(gdt) - 1),
                          idt=DescriptorTable(layout.IDT_BASE, layout.IDT32_LIMIT), cr3=cr3, cr0=cr0, cr4=cr4)
