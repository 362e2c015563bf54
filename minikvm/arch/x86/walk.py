"""A software page walk: what the CPU would do with one linear address, step by step.

The debugger, the gdb stub and the fault explainer use it to turn a guest's
virtual address into a physical one, or to say which entry refused an access
and what #PF error code the CPU pushed. The rules are the Intel SDM vol. 3A
chapter 4: paging modes (§4.1), 32-bit paging (§4.3), PAE (§4.4), 4- and
5-level paging (§4.5), access rights (§4.6) and the page-fault error code (§4.7).

What it deliberately leaves out, because the walker sees guest memory and
control registers, not the CPU's caches or its segment state: TLBs and
paging-structure caches (a guest that edits a live entry without INVLPG may
still run on the old one), the PDPTE registers PAE loads at MOV to CR3 (we read
the PDPT from memory instead), accessed/dirty bit updates (the walk never
writes), protection keys, shadow stacks, implicit supervisor accesses (GDT/IDT
reads), and MAXPHYADDR from CPUID (callers pass `maxphyaddr` when they know it).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ...memory import GuestMemoryError
from .registers import CR0_PG, CR0_WP, CR4_PAE, CR4_PSE, CR4_SMAP, CR4_SMEP, EFER_LMA, EFER_NXE

CR4_LA57 = 1 << 12  # 57-bit linear addresses: 5-level paging

# Entry bits (the same positions in every format; XD only in 8-byte entries).
P = 1 << 0
RW = 1 << 1
US = 1 << 2
PS = 1 << 7
XD = 1 << 63

# The #PF error code (SDM §4.7).
PF_P = 1 << 0  # 0: no translation (an entry was not present); 1: a protection or reserved-bit violation
PF_WR = 1 << 1  # the access was a write
PF_US = 1 << 2  # the access was a user-mode (CPL 3) access
PF_RSVD = 1 << 3  # an entry had a reserved bit set
PF_ID = 1 << 4  # an instruction fetch (reported only with SMEP, or with PAE/4-level paging and NXE)

VECTOR_GP = 13
VECTOR_PF = 14

PAGE_TABLE = 1 << 12  # every paging structure but the PAE PDPT is one 4 KiB page

MAXPHYADDR = 52  # the architectural maximum: no entry is called reserved that some CPU would accept


class PagingMode(enum.Enum):
    OFF = "paging off"
    BIT32 = "32-bit paging"
    PAE = "PAE paging"
    LEVEL4 = "4-level paging"
    LEVEL5 = "5-level paging"


def paging_mode(cr0: int, cr4: int, efer: int) -> PagingMode:
    """Which paging mode these control registers select (SDM §4.1.1, table 4-1)."""
    if not cr0 & CR0_PG:
        return PagingMode.OFF
    if not cr4 & CR4_PAE:
        # CR0.PG with EFER.LME and CR4.PAE=0 cannot be entered (#GP), so LMA implies PAE here.
        return PagingMode.BIT32
    if efer & EFER_LMA:
        return PagingMode.LEVEL5 if cr4 & CR4_LA57 else PagingMode.LEVEL4
    return PagingMode.PAE


class Op(enum.Enum):
    READ = "read"
    WRITE = "write"
    EXECUTE = "instruction fetch"


@dataclass(frozen=True)
class Access:
    """The access to check: what, and from which privilege."""

    op: Op = Op.READ
    user: bool = False  # CPL 3; False is a supervisor access (CPL 0–2)
    ac: bool = False  # EFLAGS.AC: with CR4.SMAP, lets supervisor data accesses reach user pages

    @classmethod
    def at_cpl(cls, op: Op, cpl: int, ac: bool = False) -> Access:
        return cls(op, user=cpl == 3, ac=ac)

    @property
    def write(self) -> bool:
        return self.op is Op.WRITE

    @property
    def execute(self) -> bool:
        return self.op is Op.EXECUTE

    def __str__(self) -> str:
        return f"{'user' if self.user else 'supervisor'} {self.op.value}"


READ = Access(Op.READ)
WRITE = Access(Op.WRITE)
EXECUTE = Access(Op.EXECUTE)
USER_READ = Access(Op.READ, user=True)
USER_WRITE = Access(Op.WRITE, user=True)
USER_EXECUTE = Access(Op.EXECUTE, user=True)


class Fault(enum.Enum):
    """Which check refused the access."""

    NOT_PRESENT = "not present"
    RESERVED_BIT = "reserved bit set"
    WRITE_PROTECT = "write to a read-only page"
    USER_SUPERVISOR = "user-mode access to a supervisor page"
    NO_EXECUTE = "instruction fetch from a no-execute page"
    SMEP = "supervisor instruction fetch from a user page (CR4.SMEP)"
    SMAP = "supervisor data access to a user page (CR4.SMAP, EFLAGS.AC=0)"
    NON_CANONICAL = "non-canonical address"
    OUTSIDE_RAM = "paging structure outside guest RAM"


@dataclass(frozen=True)
class Entry:
    """One paging-structure entry the walk read."""

    level: str  # "PML5E", "PML4E", "PDPTE", "PDE", "PTE"
    index: int
    addr: int  # guest-physical address of the entry
    value: int  # raw value (0 when it could not be read)
    size: int  # 4 (32-bit paging) or 8 bytes

    def __str__(self) -> str:
        return f"{self.level}[{self.index:#05x}]@{self.addr:#x}={self.value:#0{2 + 2 * self.size}x}"


@dataclass(frozen=True)
class Rights:
    """The access rights of a translation: each the combination over every entry that controls it."""

    writable: bool  # R/W=1 everywhere
    user: bool  # U/S=1 everywhere: a user-mode address
    executable: bool  # XD=0 everywhere, or NXE off

    def __str__(self) -> str:
        return ", ".join(("user" if self.user else "supervisor", "writable" if self.writable else "read-only",
                          "executable" if self.executable else "no-execute"))


@dataclass(frozen=True)
class Translation:
    """The result of a walk: a physical address, or which check failed and what the CPU would raise."""

    vaddr: int
    access: Access
    mode: PagingMode
    entries: tuple[Entry, ...] = ()
    phys: int | None = None
    page_size: int | None = None  # bytes mapped by the leaf; None with paging off or on failure
    rights: Rights | None = None
    fault: Fault | None = None
    culprit: Entry | None = None  # the entry whose bits refused the access, when one did
    reserved: int = 0  # the reserved bits found set (Fault.RESERVED_BIT)
    vector: int | None = None  # 14 (#PF) or 13 (#GP); None when no exception follows from the walk
    error_code: int | None = None  # the #PF error code; None unless vector is 14

    @property
    def ok(self) -> bool:
        return self.fault is None

    def describe(self) -> str:
        """The walk in one line, plus a second naming the exception when it failed."""
        if self.mode is PagingMode.OFF:
            return f"paging off: linear {self.vaddr:#x} is physical {self.phys:#x}"
        if self.fault is Fault.NON_CANONICAL:
            top = 56 if self.mode is PagingMode.LEVEL5 else 47
            return (f"{self.vaddr:#018x} is not canonical (bits 63:{top} must all equal bit {top}): "
                    f"#GP(0) (#SS(0) for a stack access), not #PF")
        walk = " → ".join(str(e) for e in self.entries)
        if self.fault is None:
            assert self.phys is not None and self.page_size is not None
            return f"{walk} → {self.phys:#x} ({_size_name(self.page_size)} page; {self.rights})"
        return f"{walk}: {self._reason()}\n{self._exception()}"

    def _reason(self) -> str:
        culprit = self.culprit
        if self.fault is Fault.RESERVED_BIT:
            return f"reserved bits {self.reserved:#x} set"
        if self.fault is Fault.WRITE_PROTECT and culprit is not None:
            return f"{self.fault.value} ({culprit.level} R/W=0)"
        if self.fault is Fault.USER_SUPERVISOR and culprit is not None:
            return f"{self.fault.value} ({culprit.level} U/S=0)"
        if self.fault is Fault.NO_EXECUTE and culprit is not None:
            return f"{self.fault.value} ({culprit.level} XD=1)"
        if self.fault is Fault.OUTSIDE_RAM and culprit is not None:
            return f"the {culprit.level} at {culprit.addr:#x} is outside guest RAM"
        assert self.fault is not None
        return self.fault.value

    def _exception(self) -> str:
        if self.error_code is not None:
            return f"#PF error code {self.error_code:#x}: {describe_error_code(self.error_code)}"
        if self.vector == VECTOR_GP:
            return "#GP(0) at the MOV to CR3 that loaded this PDPTE (PAE checks PDPTEs then), not #PF"
        return "the CPU would read whatever the bus returns there; KVM stops with an emulation failure"


def describe_error_code(code: int) -> str:
    """'protection violation, write, user mode' for a #PF error code."""
    words = ["protection violation" if code & PF_P else "page not present",
             "write" if code & PF_WR else "read", "user mode" if code & PF_US else "supervisor mode"]
    if code & PF_RSVD:
        words.append("reserved bit")
    if code & PF_ID:
        words.append("instruction fetch")
    return ", ".join(words)


def _size_name(size: int) -> str:
    return f"{size >> 30} GiB" if size >= 1 << 30 else f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def _bits(high: int, low: int) -> int:
    """Mask of bits high..low inclusive; empty when high < low."""
    return ((1 << (high + 1)) - 1) & ~((1 << low) - 1) if high >= low else 0


@dataclass(frozen=True)
class _Level:
    name: str
    shift: int  # lowest linear-address bit of this level's index
    index_bits: int
    large: bool  # PS=1 may make this entry a leaf
    rights: bool  # its R/W, U/S, XD control access (PAE PDPTEs have none)


_LEVELS = {
    PagingMode.BIT32: (_Level("PDE", 22, 10, True, True), _Level("PTE", 12, 10, False, True)),
    PagingMode.PAE: (_Level("PDPTE", 30, 2, False, False), _Level("PDE", 21, 9, True, True),
                     _Level("PTE", 12, 9, False, True)),
    PagingMode.LEVEL4: (_Level("PML4E", 39, 9, False, True), _Level("PDPTE", 30, 9, True, True),
                        _Level("PDE", 21, 9, True, True), _Level("PTE", 12, 9, False, True)),
}
_LEVELS[PagingMode.LEVEL5] = (_Level("PML5E", 48, 9, False, True), *_LEVELS[PagingMode.LEVEL4])


def _reserved(mode: PagingMode, level: _Level, value: int, leaf: bool, m: int, nxe: bool) -> int:
    """The reserved bits set in a present entry (SDM tables 4-4 … 4-20)."""
    if mode is PagingMode.BIT32:
        if leaf and level.name == "PDE":
            # 4 MiB page: PDE bits 20:13 hold physical bits (M'-1):32 (PSE-36), where
            # M' = min(MAXPHYADDR, 40), or 32 without PSE-36; bits 21:(M'-19) are reserved.
            return value & _bits(21, max(min(m, 40), 32) - 19)
        return 0  # no other 32-bit entry has reserved bits
    if mode is PagingMode.PAE and level.name == "PDPTE":
        return value & (_bits(2, 1) | _bits(8, 5) | _bits(63, m))
    # PAE reserves everything above MAXPHYADDR up to bit 62; 4-level ignores 62:52.
    mask = _bits(62 if mode is PagingMode.PAE else 51, m)
    if not nxe:
        mask |= XD  # without EFER.NXE bit 63 is reserved, not execute-disable
    if level.name in ("PML4E", "PML5E"):
        mask |= PS  # these never map pages
    elif leaf and level.name == "PDPTE":
        mask |= _bits(29, 13)  # 1 GiB page: bit 12 is PAT, 29:13 must be 0
    elif leaf and level.name == "PDE":
        mask |= _bits(20, 13)  # 2 MiB page: bit 12 is PAT, 20:13 must be 0
    return value & mask


def _frame(mode: PagingMode, value: int, size: int, m: int) -> int:
    """The physical address an entry points to (a table, or the page it maps)."""
    if mode is PagingMode.BIT32:
        if size == 1 << 22:  # 4 MiB page: bits 31:22 here, 39:32 from PDE bits 20:13
            return (value & 0xFFC00000) | (((value >> 13) & 0xFF) << 32)
        return value & 0xFFFFF000
    return value & _bits(m - 1, size.bit_length() - 1)


def _root(mode: PagingMode, cr3: int, m: int) -> int:
    if mode is PagingMode.BIT32:
        return cr3 & 0xFFFFF000
    if mode is PagingMode.PAE:
        return cr3 & 0xFFFFFFE0  # the PDPT is 32-byte aligned
    return cr3 & _bits(m - 1, 12)  # bits 11:0 are PCD/PWT or the PCID


def translate(read_phys: Callable[[int, int], bytes], cr0: int, cr3: int, cr4: int, efer: int,
              vaddr: int, access: Access = READ, *, maxphyaddr: int = MAXPHYADDR) -> Translation:
    """Walk the guest's paging structures for `vaddr` as the CPU would for `access`.

    `read_phys(addr, length)` reads guest-physical memory; a GuestMemoryError
    from it ends the walk with Fault.OUTSIDE_RAM. Never raises for anything the
    guest did; raises ValueError for a `vaddr` wider than the mode's linear
    addresses (32 bits, or 64 with 4/5-level paging).
    """
    mode = paging_mode(cr0, cr4, efer)
    wide = mode in (PagingMode.LEVEL4, PagingMode.LEVEL5)
    if not 0 <= vaddr < (1 << (64 if wide else 32)):
        raise ValueError(f"linear address {vaddr:#x} does not exist in {mode.value}")
    if mode is PagingMode.OFF:
        return Translation(vaddr, access, mode, phys=vaddr)
    if wide:
        top = 56 if mode is PagingMode.LEVEL5 else 47
        high = vaddr >> top  # bits 63:top must be all 0 or all 1
        if high not in (0, (1 << (64 - top)) - 1):
            return Translation(vaddr, access, mode, fault=Fault.NON_CANONICAL, vector=VECTOR_GP)

    m = maxphyaddr
    nxe = mode is not PagingMode.BIT32 and bool(efer & EFER_NXE)  # 32-bit entries have no XD bit
    size = 4 if mode is PagingMode.BIT32 else 8
    # I/D is reported only when SMEP is on, or PAE-format paging with NXE is (SDM §4.7).
    fetch_reported = bool(cr4 & CR4_SMEP) or bool(cr4 & CR4_PAE and efer & EFER_NXE)

    def failed(fault: Fault, culprit: Entry | None, reserved: int = 0) -> Translation:
        code = ((0 if fault is Fault.NOT_PRESENT else PF_P) | (PF_WR if access.write else 0)
                | (PF_US if access.user else 0) | (PF_RSVD if fault is Fault.RESERVED_BIT else 0)
                | (PF_ID if access.execute and fetch_reported else 0))
        return Translation(vaddr, access, mode, tuple(entries), fault=fault, culprit=culprit,
                           reserved=reserved, vector=VECTOR_PF, error_code=code)

    entries: list[Entry] = []
    controlling: list[Entry] = []
    table = _root(mode, cr3, m)
    levels = _LEVELS[mode]
    for number, level in enumerate(levels):
        index = (vaddr >> level.shift) & ((1 << level.index_bits) - 1)
        addr = table + index * size
        try:
            value = int.from_bytes(read_phys(addr, size), "little")
        except GuestMemoryError:
            missing = Entry(level.name, index, addr, 0, size)
            return Translation(vaddr, access, mode, (*entries, missing), fault=Fault.OUTSIDE_RAM, culprit=missing)
        entry = Entry(level.name, index, addr, value, size)
        entries.append(entry)
        if level.rights:
            controlling.append(entry)
        if not value & P:
            return failed(Fault.NOT_PRESENT, entry)  # reserved bits are not checked in a non-present entry
        # With 32-bit paging and CR4.PSE=0 the PDE's PS bit is ignored (SDM §4.3, table 4-5):
        # the entry points to a page table whatever bit 7 holds. PAE and 4-level paging
        # honour PS whatever CR4.PSE says.
        large_ok = level.large and (mode is not PagingMode.BIT32 or bool(cr4 & CR4_PSE))
        leaf = number == len(levels) - 1 or (large_ok and bool(value & PS))
        reserved = _reserved(mode, level, value, leaf, m, nxe)
        if reserved:
            if mode is PagingMode.PAE and level.name == "PDPTE":
                # PAE loads the PDPTEs at MOV to CR3 and raises #GP there (SDM §4.4.1).
                return Translation(vaddr, access, mode, tuple(entries), fault=Fault.RESERVED_BIT,
                                   culprit=entry, reserved=reserved, vector=VECTOR_GP)
            return failed(Fault.RESERVED_BIT, entry, reserved)
        if leaf:  # the last level always is one, so the loop always ends here
            break
        table = _frame(mode, value, PAGE_TABLE, m)
    page = 1 << level.shift
    phys = _frame(mode, entry.value, page, m) | (vaddr & (page - 1))

    def first_without(bit: int) -> Entry | None:
        return next((e for e in controlling if not e.value & bit), None)

    def first_with(bit: int) -> Entry | None:
        return next((e for e in controlling if e.value & bit), None)

    read_only, supervisor = first_without(RW), first_without(US)
    no_exec = first_with(XD) if nxe else None
    rights = Rights(writable=read_only is None, user=supervisor is None, executable=no_exec is None)

    # Access rights (SDM §4.6.1), checked once the translation exists.
    if access.user and supervisor is not None:
        return failed(Fault.USER_SUPERVISOR, supervisor)
    if not access.user and rights.user:
        if access.execute and cr4 & CR4_SMEP:
            return failed(Fault.SMEP, None)
        if not access.execute and cr4 & CR4_SMAP and not access.ac:
            return failed(Fault.SMAP, None)
    # Supervisor writes ignore R/W unless CR0.WP is set; user writes never do.
    if access.write and read_only is not None and (access.user or cr0 & CR0_WP):
        return failed(Fault.WRITE_PROTECT, read_only)
    if access.execute and no_exec is not None:
        return failed(Fault.NO_EXECUTE, no_exec)
    return Translation(vaddr, access, mode, tuple(entries), phys=phys, page_size=page, rights=rights)



def read_linear(read_phys: Callable[[int, int], bytes], cr0: int, cr3: int, cr4: int, efer: int,
                linear: int, length: int, access: Access = READ) -> bytes:
    """Up to `length` bytes from `linear` on, through the paging structures when CR0.PG is set.

    Shorter when a byte is not mapped, not accessible as `access`, not in RAM, or past the mode's
    linear addresses: what comes before it is what a report or a debugger can still show.
    """
    data = bytearray()
    while len(data) < length:
        addr = linear + len(data)
        try:
            phys = translate(read_phys, cr0, cr3, cr4, efer, addr, access).phys
        except ValueError:
            break
        if phys is None:
            break
        chunk = min(length - len(data), PAGE_TABLE - (addr & (PAGE_TABLE - 1)))
        try:
            data += read_phys(phys, chunk)
        except GuestMemoryError:  # RAM ends inside this page: keep the bytes before its end
            for offset in range(chunk):
                try:
                    data += read_phys(phys + offset, 1)
                except GuestMemoryError:
                    break
            break
    return bytes(data)
