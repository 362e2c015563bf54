"""CPU state recipes: the registers a guest sees at its first instruction, per mode.

A loader writes tables into guest memory, then asks for the matching
`BootState`; both accelerators apply the same value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .descriptors import (
    ACCESS_CODE_RING0,
    ACCESS_DATA_RING0,
    FLAGS_32BIT_4K,
    FLAGS_64BIT_CODE,
    Descriptor,
    Segment,
)
from .registers import (
    CR0_ET,
    CR0_MP,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR4_OSFXSR,
    CR4_OSXMMEXCPT,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    RFLAGS_FIXED,
)


class Mode(enum.Enum):
    REAL = "real"
    PROTECTED = "protected"  # 32-bit, paging off
    PAGING = "paging"  # 32-bit with paging (the --paging layout)
    LONG = "long"

    @property
    def label(self) -> str:
        return {Mode.REAL: "real mode", Mode.PROTECTED: "32-bit protected mode",
                Mode.PAGING: "32-bit protected mode with paging", Mode.LONG: "64-bit long mode"}[self]


@dataclass(frozen=True)
class DescriptorTable:
    base: int
    limit: int


@dataclass
class BootState:
    """Everything an accelerator needs to start a vCPU."""

    mode: Mode
    regs: dict[str, int]  # kvm_regs field names: rax … r15, rip, rflags
    segments: dict[str, Segment]  # cs ds es fs gs ss tr ldt
    gdt: DescriptorTable
    idt: DescriptorTable
    cr0: int = 0
    cr3: int = 0
    cr4: int = 0
    efer: int = 0
    msrs: dict[int, int] = field(default_factory=dict)


# x87/SSE usable from the first instruction: compilers emit SSE (see ABI.md, "the SSE trap").
CR0_FPU = CR0_MP | CR0_NE
CR4_SSE = CR4_OSFXSR | CR4_OSXMMEXCPT

SEL_CODE = 0x08
SEL_DATA = 0x10


def _system_segments() -> dict[str, Segment]:
    # A busy 32-bit TSS placeholder: VMX refuses entry with an unusable TR.
    tr = Segment(selector=0, base=0, limit=0xFFFF, type=0xB, s=False)
    ldt = Segment(selector=0, base=0, limit=0xFFFF, type=0x2, s=False)
    return {"tr": tr, "ldt": ldt}


def real_mode(entry: int, segment: int = 0, sp: int = 0) -> BootState:
    """ABI.md real mode: CS=DS=ES=FS=GS=SS=`segment`, IP=`entry`, FLAGS=0x2."""
    segments = {name: Segment.real_mode(segment, code=(name == "cs"))
                for name in ("cs", "ds", "es", "fs", "gs", "ss")}
    segments.update(_system_segments())
    regs = {"rip": entry, "rsp": sp, "rflags": RFLAGS_FIXED}
    return BootState(Mode.REAL, regs, segments, DescriptorTable(0, 0xFFFF), DescriptorTable(0, 0x3FF),
                     cr0=CR0_ET)


def flat_segments(code: Descriptor, data: Descriptor) -> dict[str, Segment]:
    segments = {name: Segment.from_descriptor(SEL_DATA, data) for name in ("ds", "es", "fs", "gs", "ss")}
    segments["cs"] = Segment.from_descriptor(SEL_CODE, code)
    segments.update(_system_segments())
    return segments


FLAT_CODE32 = Descriptor(0, 0xFFFFF, ACCESS_CODE_RING0, FLAGS_32BIT_4K)
FLAT_DATA32 = Descriptor(0, 0xFFFFF, ACCESS_DATA_RING0, FLAGS_32BIT_4K)
FLAT_CODE64 = Descriptor(0, 0xFFFFF, ACCESS_CODE_RING0, FLAGS_64BIT_CODE)


def protected_mode(entry: int, esp: int, gdt: DescriptorTable, idt: DescriptorTable,
                   cr3: int | None = None, cr0: int | None = None, cr4: int | None = None) -> BootState:
    """Flat 32-bit protected mode; paging on when `cr3` is given. IF=0."""
    paging = cr3 is not None
    default_cr0 = CR0_PE | CR0_ET | CR0_FPU | (CR0_PG if paging else 0)
    return BootState(Mode.PAGING if paging else Mode.PROTECTED,
                     {"rip": entry, "rsp": esp, "rflags": RFLAGS_FIXED},
                     flat_segments(FLAT_CODE32, FLAT_DATA32), gdt, idt,
                     cr0=default_cr0 if cr0 is None else cr0, cr3=cr3 or 0,
                     cr4=CR4_SSE if cr4 is None else cr4)


def long_mode(entry: int, rsp: int, gdt: DescriptorTable, idt: DescriptorTable, cr3: int,
              cr0: int | None = None, cr4: int | None = None) -> BootState:
    """64-bit long mode with 4-level paging at `cr3`. IF=0."""
    return BootState(Mode.LONG, {"rip": entry, "rsp": rsp, "rflags": RFLAGS_FIXED},
                     flat_segments(FLAT_CODE64, FLAT_DATA32), gdt, idt,
                     cr0=CR0_PE | CR0_ET | CR0_FPU | CR0_PG if cr0 is None else cr0, cr3=cr3,
                     cr4=CR4_PAE | CR4_SSE if cr4 is None else cr4, efer=EFER_LME | EFER_LMA)
