"""Capstone engines for x86 code: one per operand size, detail setting and thread.

Building a Cs handle costs more than decoding one instruction, and reports,
traces and the software CPU's fault decoding decode one at a time. A handle
is not shared between threads: ctypes releases the GIL inside cs_disasm, so
two vCPU threads could otherwise decode on one handle at once. capstone is
imported on first use only (start-up time).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from capstone import Cs

_local = threading.local()


def engine(bits: int, detail: bool = False) -> Cs:
    """The calling thread's engine for 16-, 32- or 64-bit code."""
    engines: dict[tuple[int, bool], Cs] = _local.__dict__.setdefault("engines", {})
    key = (bits, detail)
    if key not in engines:
        import capstone

        modes = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}
        made = capstone.Cs(capstone.CS_ARCH_X86, modes[bits])
        made.detail = detail
        engines[key] = made
    return engines[key]
