"""Segment descriptors: encode GDT entries, decode them, and the segment state a CPU holds.

Facts from the Intel SDM vol. 3A §3.4.5: an 8-byte descriptor splits base and
limit across the entry; access byte = P|DPL|S|type; flags nibble = G|D/B|L|AVL.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ACCESS_PRESENT = 0x80
ACCESS_CODE_RING0 = 0x9A  # present, DPL0, code, execute/read
ACCESS_DATA_RING0 = 0x92  # present, DPL0, data, read/write
ACCESS_CODE_RING3 = 0xFA
ACCESS_DATA_RING3 = 0xF2
ACCESS_TSS32_AVAILABLE = 0x89

FLAGS_32BIT_4K = 0xC  # G=1 (4 KiB granularity), D/B=1 (32-bit)
FLAGS_64BIT_CODE = 0xA  # G=1, L=1
FLAGS_BYTE = 0x0


@dataclass(frozen=True)
class Descriptor:
    """A decoded 8-byte segment descriptor."""

    base: int
    limit: int  # the raw 20-bit limit
    access: int
    flags: int

    @property
    def present(self) -> bool:
        return bool(self.access & ACCESS_PRESENT)

    @property
    def dpl(self) -> int:
        return (self.access >> 5) & 3

    @property
    def system(self) -> bool:
        """True for system descriptors (TSS, LDT, gates): the S bit is clear."""
        return not self.access & 0x10

    @property
    def type(self) -> int:
        return self.access & 0xF

    @property
    def granularity(self) -> bool:
        return bool(self.flags & 0x8)

    @property
    def effective_limit(self) -> int:
        """The limit in bytes, after the granularity scaling."""
        return (self.limit << 12) | 0xFFF if self.granularity else self.limit


def encode_descriptor(base: int, limit: int, access: int, flags: int) -> bytes:
    """The 8 bytes of a GDT/LDT entry; `limit` is the raw 20-bit value."""
    if not 0 <= limit <= 0xFFFFF:
        raise ValueError(f"segment limit {limit:#x} does not fit in 20 bits")
    low = (limit & 0xFFFF) | ((base & 0xFFFF) << 16)
    high = (((base >> 16) & 0xFF) | (access << 8) | (((limit >> 16) & 0xF) << 16)
            | ((flags & 0xF) << 20) | (((base >> 24) & 0xFF) << 24))
    return struct.pack("<II", low, high)


def decode_descriptor(raw: bytes) -> Descriptor:
    low, high = struct.unpack("<II", raw[:8])
    base = (low >> 16) | ((high & 0xFF) << 16) | (high & 0xFF000000)
    limit = (low & 0xFFFF) | (high & 0xF0000)
    return Descriptor(base, limit, (high >> 8) & 0xFF, (high >> 20) & 0xF)


# Segment types of system descriptors (SDM vol. 3A, table 3-2). Types 9 and 11 are 32-bit TSSs, or
# 64-bit ones in IA-32e mode: the segment alone cannot tell which.
SYSTEM_TYPES = {0x1: "16-bit TSS (available)", 0x2: "LDT", 0x3: "16-bit TSS (busy)", 0x9: "TSS (available)",
                0xB: "TSS (busy)"}


@dataclass(frozen=True)
class Segment:
    """A segment register's hidden state, as KVM and the CPU hold it."""

    selector: int
    base: int
    limit: int  # in bytes
    type: int
    s: bool = True
    dpl: int = 0
    present: bool = True
    db: bool = False
    l: bool = False  # noqa: E741 - the architectural name of the 64-bit code bit
    g: bool = False
    avl: bool = False
    unusable: bool = False

    @classmethod
    def from_descriptor(cls, selector: int, desc: Descriptor) -> Segment:
        # Loading a segment register sets the accessed bit in the type.
        accessed = 0 if desc.system else 1
        return cls(selector=selector, base=desc.base, limit=desc.effective_limit,
                   type=desc.type | accessed, s=not desc.system, dpl=desc.dpl,
                   present=desc.present, db=bool(desc.flags & 0x4), l=bool(desc.flags & 0x2),
                   g=desc.granularity, avl=bool(desc.flags & 0x1))

    @classmethod
    def real_mode(cls, selector: int, code: bool = False) -> Segment:
        """A real-mode segment: base = selector*16, 64 KiB limit."""
        return cls(selector=selector, base=selector << 4, limit=0xFFFF, type=0xB if code else 0x3)

    def describe(self) -> str:
        """One line for register dumps."""
        if self.unusable:
            return f"{self.selector:#06x} (unusable)"
        if self.s:
            kind = "code" if self.type & 0x8 else "data"
            kind += " 64-bit" if self.l else (" 32-bit" if self.db else " 16-bit")
        else:  # D/B and L mean nothing here: the type says it all
            kind = SYSTEM_TYPES.get(self.type, f"system type {self.type:#x}")
        present = "" if self.present else " NOT PRESENT"
        return f"{self.selector:#06x} base={self.base:#x} limit={self.limit:#x} {kind} dpl={self.dpl}{present}"


def null_segment() -> Segment:
    return Segment(selector=0, base=0, limit=0, type=0, s=False, present=False, unusable=True)
