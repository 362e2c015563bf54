"""Disassembly with capstone, imported only when a report needs it (keeps start-up fast)."""

from __future__ import annotations

from ..arch.x86.decoder import engine
from ..arch.x86.state import Mode

_BITS = {Mode.REAL: 16, Mode.PROTECTED: 32, Mode.PAGING: 32, Mode.LONG: 64}


def bits_for(mode: Mode, code_db: bool = True, code_l: bool = False) -> int:
    if code_l:
        return 64
    if mode is Mode.REAL or not code_db:
        return 16
    return _BITS[mode]


def disassemble(code: bytes, address: int, bits: int, count: int = 1) -> list[tuple[int, bytes, str]]:
    """Up to `count` instructions: (address, bytes, 'mnemonic operands')."""
    result = []
    for insn in engine(bits).disasm(code, address):
        result.append((insn.address, bytes(insn.bytes), f"{insn.mnemonic} {insn.op_str}".strip()))
        if len(result) == count:
            break
    return result


def describe_instruction(code: bytes, address: int, bits: int) -> str:
    """'66 0f 6e c0  movd xmm0, eax' or the raw bytes when they do not decode."""
    decoded = disassemble(code, address, bits) if code else []
    if not decoded:
        return f"{code[:8].hex(' ') or '??'}  (does not decode)"
    _, raw, text = decoded[0]
    return f"{raw.hex(' ')}  {text}"
