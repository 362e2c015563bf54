"""Why a guest stopped: one plain value that every layer can produce and read.

Devices report a stop through a `StopSink`; the run loop adds the guest
address; the CLI turns the reason into one line of text and an exit status.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

# Process exit statuses (DESIGN.md, "Machines and guests"). 2, for usage
# errors, belongs to the CLI: no guest ran.
STATUS_CLEAN = 0
STATUS_FAULT = 1
STATUS_TIMEOUT = 124
STATUS_INTERRUPTED = 130


class StopKind(enum.Enum):
    """How a guest ended; each value is a short human label."""

    HALT = "halt"
    EXIT_HYPERCALL = "exit hypercall"
    RESET = "reset"
    DEBUG_EXIT = "debug exit"
    UNKNOWN_HYPERCALL = "unknown hypercall"
    INPUT_EOF = "end of input"
    TRIPLE_FAULT = "triple fault"
    INTERNAL_ERROR = "internal error"
    FAIL_ENTRY = "failed entry"
    ACCEL_ERROR = "accelerator error"
    OUTPUT_FAILED = "output failed"  # the guest's output had nowhere to go (a closed pipe, a full disk)
    UNHANDLED_EXIT = "unhandled exit"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"

    @property
    def label(self) -> str:
        return self.value


# Ends the guest chose itself. DEBUG_EXIT is clean only with exit code 0.
_CLEAN_KINDS = frozenset({StopKind.HALT, StopKind.EXIT_HYPERCALL, StopKind.RESET})


@dataclass(frozen=True)
class StopReason:
    kind: StopKind
    message: str  # one line, e.g. "halted (HLT)", "unknown hypercall 0x7f at 0x12"
    exit_code: int = 0  # what the guest wrote to the debug-exit port, else 0
    rip: int | None = None  # guest address where it stopped, when known

    @property
    def clean(self) -> bool:
        if self.kind is StopKind.DEBUG_EXIT:
            return self.exit_code == 0
        return self.kind in _CLEAN_KINDS

    @property
    def status(self) -> int:
        """The process exit status this stop alone would give."""
        if self.clean:
            return STATUS_CLEAN
        if self.kind is StopKind.TIMEOUT:
            return STATUS_TIMEOUT
        if self.kind is StopKind.INTERRUPTED:
            return STATUS_INTERRUPTED
        return STATUS_FAULT

    @classmethod
    def halt(cls) -> StopReason:
        return cls(StopKind.HALT, "halted (HLT)")

    @classmethod
    def timeout(cls, seconds: float) -> StopReason:
        return cls(StopKind.TIMEOUT, f"timed out after {seconds:g} s")

    @classmethod
    def interrupted(cls) -> StopReason:
        return cls(StopKind.INTERRUPTED, "interrupted (Ctrl-C)")


# What a device calls to end its guest; the machine decides what happens next.
StopSink = Callable[[StopReason], None]
