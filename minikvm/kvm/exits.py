"""Typed vCPU exits: the closed set a run loop dispatches on.

Both accelerators (KVM here, the software CPU in emu/) return these objects,
so devices, the run loop and the diagnostics are written once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class IoExit:
    """Port I/O. For OUT, `data` holds count*size bytes the guest wrote; for IN
    the run loop answers with `Vcpu.complete_io_in(exit, data)`."""

    port: int
    size: int
    count: int
    is_write: bool
    data: bytes = b""
    data_offset: int = 0  # where in kvm_run the data lives (KVM only)


@dataclass(slots=True)
class MmioExit:
    """A guest access to a physical address with no RAM behind it."""

    addr: int
    length: int
    is_write: bool
    data: bytes


@dataclass(slots=True)
class HltExit:
    """The guest executed HLT (and no in-kernel irqchip absorbed it)."""


@dataclass(slots=True)
class ShutdownExit:
    """KVM_EXIT_SHUTDOWN: a triple fault (or a shutdown the CPU could not avoid)."""


@dataclass(slots=True)
class InternalErrorExit:
    """KVM could not handle something itself, e.g. an instruction it cannot emulate."""

    suberror: int
    data: tuple[int, ...]
    insn_bytes: bytes | None  # present for emulation failures when the kernel supplies them


@dataclass(slots=True)
class FailEntryExit:
    """The hardware refused to enter the guest (invalid state)."""

    hardware_reason: int
    cpu: int


@dataclass(slots=True)
class SystemEventExit:
    """The guest asked for a shutdown/reset/crash through a paravirtual interface."""

    type: int
    data: tuple[int, ...]


@dataclass(slots=True)
class DebugExit:
    """A breakpoint or single step stopped the guest (KVM_GUESTDBG_*)."""

    exception: int
    pc: int
    dr6: int
    dr7: int


@dataclass(slots=True)
class InterruptedExit:
    """KVM_RUN returned because the VMM asked it to (signal / immediate_exit)."""


@dataclass(slots=True)
class UnsupportedExit:
    """An exit reason minikvm does not handle; the stop report names it."""

    reason: int
    name: str


@dataclass(slots=True)
class AcceleratorErrorExit:
    """The accelerator itself cannot go on (the software CPU met something it does not model)."""

    message: str


Exit = (IoExit | MmioExit | HltExit | ShutdownExit | InternalErrorExit | FailEntryExit
        | SystemEventExit | DebugExit | InterruptedExit | UnsupportedExit | AcceleratorErrorExit)
