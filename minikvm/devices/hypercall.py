"""The hypercall port (0x500) of the Mini-KVM ABI.

`OUT 0x500, AL` issues hypercall AL with its argument in BL. A port write
carries only AL, so the machine's adapter reads BL from the vCPU and calls
`call(AL, BL)`; the device itself never sees a register.
"""

from __future__ import annotations

import enum
import time
from collections import Counter
from collections.abc import Callable

from ..stop import StopKind, StopReason, StopSink
from .input import EofWatch, InputBuffer

NO_INPUT = 0xFF  # GETCHAR's answer when no byte is queued (guests poll)


class Hypercall(enum.IntEnum):
    EXIT = 0
    PUTCHAR = 1
    GETCHAR = 2


class HypercallPort:
    def __init__(
        self,
        output: Callable[[bytes], None],
        stop: StopSink,
        input: InputBuffer | None = None,
        eof: EofWatch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._output = output
        self._stop = stop
        self._input = input
        self._eof = eof
        self._clock = clock
        self._fetched: int | None = None  # GETCHAR's byte, until IN reads it
        self.calls: Counter[int] = Counter()  # hypercall number -> count

    def call(self, number: int, arg: int) -> None:
        self.calls[number] += 1
        if number == Hypercall.EXIT:
            self._stop(StopReason(StopKind.EXIT_HYPERCALL, "exit hypercall"))
        elif number == Hypercall.PUTCHAR:
            self._output(bytes((arg & 0xFF,)))
            if self._eof is not None:
                self._eof.reset()  # a guest still producing output is not stuck
        elif number == Hypercall.GETCHAR:
            self._fetched = self._getchar()
        else:
            self._stop(StopReason(StopKind.UNKNOWN_HYPERCALL, f"unknown hypercall {number:#x}"))

    def read(self, offset: int, size: int) -> int:
        """`IN 0x500`: the byte the last GETCHAR fetched, once; 0 without one."""
        fetched, self._fetched = self._fetched, None
        return 0 if fetched is None else fetched

    def write(self, offset: int, size: int, value: int) -> None:
        # Present for the PortDevice protocol only: the argument lives in BL,
        # which a port write does not carry. Failing loudly beats dropping a
        # hypercall when the machine wires this port straight to a bus.
        raise NotImplementedError("OUT to the hypercall port goes through call(AL, BL)")

    def _getchar(self) -> int:
        byte = None if self._input is None else self._input.read_byte()
        if byte is not None:
            if self._eof is not None:
                self._eof.reset()
            return byte
        if (
            self._input is not None
            and self._eof is not None
            and self._input.at_eof
            and self._eof.poll_empty(self._clock())
        ):
            message = "guest is waiting for input that will never come"
            self._stop(StopReason(StopKind.INPUT_EOF, message))
        return NO_INPUT
