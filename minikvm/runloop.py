"""The vCPU run loop: run → exit → bus → device, until something stops the guest.

`dispatch` turns one exit into at most one StopReason; it is a plain method
over a vCPU-like object, so tests can drive it with synthetic exits.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .arch.x86.registers import RFLAGS_IF
from .devices.bus import Bus
from .kvm import uapi
from .kvm.exits import (
    AcceleratorErrorExit,
    DebugExit,
    Exit,
    FailEntryExit,
    HltExit,
    InternalErrorExit,
    InterruptedExit,
    IoExit,
    MmioExit,
    ShutdownExit,
    SystemEventExit,
    UnsupportedExit,
)
from .stop import StopKind, StopReason

INTERNAL_ERROR_NAMES = {
    uapi.KVM_INTERNAL_ERROR_EMULATION: "KVM could not emulate an instruction",
    uapi.KVM_INTERNAL_ERROR_SIMUL_EX: "an exception occurred while delivering another (simultaneous exceptions)",
    uapi.KVM_INTERNAL_ERROR_DELIVERY_EV: "an event could not be delivered",
    uapi.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "the hardware exited for a reason KVM does not expect",
}


@dataclass
class ExitStats:
    """What the run loop counts as it goes (debug/stats.py formats it for --stats)."""

    exits: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_port: Counter[tuple[int, str]] = field(default_factory=Counter)  # (port, "in"|"out")
    coalesced: int = 0  # writes KVM buffered without an exit
    interrupts: Counter[int] | None = None  # vector → deliveries, where the accelerator lets us see them
    guest_seconds: float = 0.0
    vmm_seconds: float = 0.0


class RunnableVcpu(Protocol):
    def run(self) -> Exit: ...
    def exit_regs(self) -> uapi.kvm_regs: ...
    def complete_io_in(self, exit: IoExit, data: bytes) -> None: ...
    def complete_mmio_read(self, data: bytes) -> None: ...
    def drain_coalesced(self) -> list[tuple[int, bool, bytes]]: ...
    def request_exit(self) -> None: ...


class DebugHook(Protocol):
    """A debugger or an instruction trace on the loop (debug/gdbstub.GuestControl), called in the vCPU thread."""

    def checkpoint(self) -> None: ...  # before each run: the vCPU may pause here until resumed or stopped
    def on_exit(self, exit: Exit) -> Exit | None: ...  # sees every exit first; None: it was the debugger's own
    def wake(self) -> None: ...  # (any thread) a stop was requested: leave any pause
    def finished(self, stop: StopReason) -> None: ...  # the machine's run is over (its stop report is next)


class RunLoop:
    def __init__(self, vcpu: RunnableVcpu, ports: Bus, stats: ExitStats,
                 trace: Callable[[str], None] | None = None) -> None:
        self.vcpu = vcpu
        self.ports = ports
        self.stats = stats
        self.trace = trace  # --verbose: one line per exit
        self.stop: StopReason | None = None
        self._stop_lock = threading.Lock()
        self.kick: Callable[[], None] = lambda: None  # set by the thread that runs us
        self.unclaimed_mmio = 0
        self.last_exit: Exit | None = None  # for the stop report
        self._inline_seconds = 0.0
        self.idle_check: Callable[[], StopReason | None] | None = None
        self.debugger: DebugHook | None = None  # --gdb / --trace: a pause point and the first look at exits
        # Called at the end, so the output is complete before the stop report.
        self.flush_output: Callable[[], None] = lambda: None

    def request_stop(self, reason: StopReason) -> None:
        """Stop the guest at the next exit (from any thread). The first reason wins."""
        with self._stop_lock:
            if self.stop is not None:
                return
            self.stop = reason
        self.vcpu.request_exit()
        self.kick()
        if self.debugger is not None:
            self.debugger.wake()

    def run(self) -> StopReason:
        vcpu, stats = self.vcpu, self.stats
        clock = time.perf_counter
        if hasattr(vcpu, "inline_exit"):
            vcpu.inline_exit = self._inline  # the software CPU dispatches I/O from inside the guest slice
        debugger = self.debugger
        # The hot path, an OUT of one value with no debugger or trace watching, is handled here
        # without _handle's generality: about a microsecond less per exit (bench/exits.py).
        plain = debugger is None and self.trace is None
        write, by_reason, by_port = self.ports.write, stats.by_reason, stats.by_port
        guest = vmm = 0.0
        try:
            t0 = clock()
            while self.stop is None:
                if debugger is not None:
                    debugger.checkpoint()  # a debugger pauses the vCPU here, between two runs
                    if self.stop is not None:
                        break
                    t0 = clock()
                exit = vcpu.run()
                t1 = clock()
                inline, self._inline_seconds = self._inline_seconds, 0.0
                if plain and type(exit) is IoExit and exit.is_write and exit.count == 1:
                    stats.exits += 1
                    by_reason["IoExit"] += 1
                    self._drain_coalesced()
                    self.last_exit = exit
                    by_port[exit.port, "out"] += 1
                    write(exit.port, exit.size, int.from_bytes(exit.data, "little"))
                else:
                    self._handle(exit)
                t2 = clock()
                guest += t1 - t0 - inline
                vmm += t2 - t1 + inline
                t0 = t2
        finally:
            stats.guest_seconds += guest
            stats.vmm_seconds += vmm
        self._drain_coalesced()
        self.flush_output()
        return self.stop

    def _handle(self, exit: Exit) -> None:
        if type(exit) is InterruptedExit and self.stop is not None:
            return  # the run only ended because the guest is stopped: not an exit of the guest's
        self.stats.exits += 1
        self.stats.by_reason[type(exit).__name__] += 1
        self._drain_coalesced()
        if self.debugger is not None:
            handled = self.debugger.on_exit(exit)  # a single step or a breakpoint is the debugger's
            if handled is None:
                return
            exit = handled
        if type(exit) is not InterruptedExit:  # a kick says nothing about where the guest was
            self.last_exit = exit
        reason = self.dispatch(exit)
        if reason is not None:
            self.request_stop(reason)

    def _inline(self, exit: Exit) -> bool:
        """An exit the software CPU dispatches from inside its slice. True: the guest is stopped, and
        nothing after this instruction may run (nor reach a device, once it is stopped already)."""
        if self.stop is None:
            started = time.perf_counter()
            self._handle(exit)
            self._inline_seconds += time.perf_counter() - started
        return self.stop is not None

    def _drain_coalesced(self) -> None:
        # Writes KVM buffered without exiting happened before this exit: play
        # them to the devices first, so output keeps the guest's order. Runs
        # of byte writes to one port go to the device in one call.
        entries = self.vcpu.drain_coalesced()
        if not entries:
            return
        self.stats.coalesced += len(entries)
        ports = self.ports
        run_port, run = -1, bytearray()
        for addr, is_pio, data in entries:
            if not is_pio:
                continue
            if len(data) == 1 and addr == run_port:
                run += data
                continue
            if run:
                ports.write_bytes(run_port, bytes(run))
                run.clear()
            if len(data) == 1:
                run_port, run = addr, bytearray(data)
            else:
                run_port = -1
                ports.write(addr, len(data), int.from_bytes(data, "little"))
        if run:
            ports.write_bytes(run_port, bytes(run))

    def dispatch(self, exit: Exit) -> StopReason | None:
        if type(exit) is IoExit:
            return self._io(exit)
        if self.trace is not None:
            self.trace(f"exit {type(exit).__name__}")
        if isinstance(exit, HltExit):
            if self.vcpu.exit_regs().rflags & RFLAGS_IF:
                return StopReason(StopKind.HALT, "halted (HLT) with interrupts enabled, but this machine has "
                                  "no interrupt source to wake it (--interrupts gives it a PIC and PIT)")
            return StopReason(StopKind.HALT, "halted (HLT)")
        if isinstance(exit, InterruptedExit):
            # A kick: either a stop request (the loop condition sees it) or a look at an idle vCPU.
            return self.idle_check() if self.idle_check is not None and self.stop is None else None
        if isinstance(exit, MmioExit):
            self.unclaimed_mmio += 1
            if not exit.is_write:
                self.vcpu.complete_mmio_read(b"\xff" * exit.length)
            return None
        if isinstance(exit, ShutdownExit):
            return StopReason(StopKind.TRIPLE_FAULT, "triple fault (the CPU shut down)")
        if isinstance(exit, InternalErrorExit):
            what = INTERNAL_ERROR_NAMES.get(exit.suberror, f"suberror {exit.suberror}")
            return StopReason(StopKind.INTERNAL_ERROR, f"KVM internal error: {what}")
        if isinstance(exit, FailEntryExit):
            return StopReason(StopKind.FAIL_ENTRY, "the CPU refused to enter the guest "
                              f"(hardware entry failure reason {exit.hardware_reason:#x})")
        if isinstance(exit, SystemEventExit):
            if exit.type in (uapi.KVM_SYSTEM_EVENT_SHUTDOWN, uapi.KVM_SYSTEM_EVENT_RESET):
                return StopReason(StopKind.RESET, "the guest asked for a shutdown or reset")
            return StopReason(StopKind.ACCEL_ERROR, f"system event {exit.type} (guest crash)")
        if isinstance(exit, AcceleratorErrorExit):
            return StopReason(StopKind.ACCEL_ERROR, exit.message)
        if isinstance(exit, DebugExit):
            return StopReason(StopKind.UNHANDLED_EXIT, f"debug exception at {exit.pc:#x} with no debugger attached")
        assert isinstance(exit, UnsupportedExit)
        return StopReason(StopKind.UNHANDLED_EXIT, f"unhandled exit {exit.name} ({exit.reason})")

    def _io(self, exit: IoExit) -> None:
        port, size = exit.port, exit.size
        if exit.is_write:
            self.stats.by_port[port, "out"] += 1
            data = exit.data
            if exit.count == 1 and self.trace is None:  # the common case, kept short
                self.ports.write(port, size, int.from_bytes(data, "little"))
                return None
            for i in range(0, len(data), size):
                value = int.from_bytes(data[i:i + size], "little")
                if self.trace is not None:
                    self.trace(f"exit IO out port={port:#06x} size={size} value={value:#x}")
                self.ports.write(port, size, value)
        else:
            self.stats.by_port[port, "in"] += 1
            values = [self.ports.read(port, size) for _ in range(exit.count)]
            if self.trace is not None:
                for value in values:
                    self.trace(f"exit IO in  port={port:#06x} size={size} value={value:#x}")
            self.vcpu.complete_io_in(exit, b"".join(v.to_bytes(size, "little") for v in values))
        return None
