"""The words minikvm says when a guest stops: one line, and for abnormal stops the evidence."""

from __future__ import annotations

from ..machine import RunResult
from ..stop import StopKind
from .disasm import bits_for, describe_instruction
from .dump import register_dump

# The stops debug/explain.py explains (the others get the plain stop_report).
EXPLAINED = {StopKind.TRIPLE_FAULT, StopKind.INTERNAL_ERROR, StopKind.FAIL_ENTRY, StopKind.UNKNOWN_HYPERCALL,
             StopKind.ACCEL_ERROR, StopKind.UNHANDLED_EXIT}

RESET_STATE = ("the registers read after the shutdown are the CPU's reset state (RIP=0xfff0, "
               "CS=0xf000): this host re-initialises the vCPU after a triple fault, so the fault "
               "location is lost")


def stop_line(result: RunResult) -> str:
    """'hello: halted (HLT) at 0x18 after 13 exits, 0.4 ms'."""
    stop = result.stop
    where = f" at {stop.rip:#x}" if stop.rip is not None and "at 0x" not in stop.message else ""
    return (f"{result.name}: {stop.message}{where} after {result.stats.exits} exits, "
            f"{result.wall_seconds * 1e3:.1f} ms")


def stop_report(result: RunResult) -> list[str]:
    """The faulting instruction and the CPU state, or why they are unknown."""
    snap = result.snapshot
    if snap is None:
        return []
    if snap.reset_state:
        return [RESET_STATE]
    regs, sregs = snap.regs, snap.sregs
    bits = bits_for(snap.mode, bool(sregs.cs.db), bool(sregs.cs.l))
    return [f"instruction at {regs.rip:#x}: {describe_instruction(snap.code, regs.rip, bits)}",
            *register_dump(regs, sregs)]
