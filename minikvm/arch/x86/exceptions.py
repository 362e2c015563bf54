"""The 32 architectural exception vectors: mnemonic, name, whether an error code is pushed."""

from __future__ import annotations

from typing import NamedTuple


class Vector(NamedTuple):
    mnemonic: str
    name: str
    error_code: bool


VECTORS: dict[int, Vector] = {
    0: Vector("#DE", "divide error", False),
    1: Vector("#DB", "debug", False),
    2: Vector("NMI", "non-maskable interrupt", False),
    3: Vector("#BP", "breakpoint", False),
    4: Vector("#OF", "overflow", False),
    5: Vector("#BR", "bound range exceeded", False),
    6: Vector("#UD", "invalid opcode", False),
    7: Vector("#NM", "device not available", False),
    8: Vector("#DF", "double fault", True),
    9: Vector("CSO", "coprocessor segment overrun", False),
    10: Vector("#TS", "invalid TSS", True),
    11: Vector("#NP", "segment not present", True),
    12: Vector("#SS", "stack-segment fault", True),
    13: Vector("#GP", "general protection", True),
    14: Vector("#PF", "page fault", True),
    16: Vector("#MF", "x87 floating-point error", False),
    17: Vector("#AC", "alignment check", True),
    18: Vector("#MC", "machine check", False),
    19: Vector("#XM", "SIMD floating-point exception", False),
    20: Vector("#VE", "virtualization exception", False),
    21: Vector("#CP", "control protection", True),
}


def vector_name(vector: int) -> str:
    """'#GP (general protection)' for exceptions, 'INT 0x80' for the rest."""
    known = VECTORS.get(vector)
    if known:
        return f"{known.mnemonic} ({known.name})"
    return f"INT {vector:#x}"
