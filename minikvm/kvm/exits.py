"""Typed vCPU exits: the closed set a run loop dispatches on.

Both accelerators (KVM here, the software CPU in emu/) return these objects,
so devices, the run loop and the diagnostics are written once. They are
plain slotted classes, not dataclasses: one is made per exit, and a
dataclass's import cost shows in every start of a VMM run many times over.
"""

from __future__ import annotations


class _Exit:
    __slots__ = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


class IoExit(_Exit):
    """Port I/O. For OUT, `data` holds count*size bytes the guest wrote; for IN
    the run loop answers with `Vcpu.complete_io_in(exit, data)`."""

    __slots__ = ("count", "data", "data_offset", "is_write", "port", "size")

    def __init__(self, port: int, size: int, count: int, is_write: bool, data: bytes = b"",
                 data_offset: int = 0) -> None:
        self.port, self.size, self.count, self.is_write = port, size, count, is_write
        self.data = data
        self.data_offset = data_offset  # where in kvm_run the data lives (KVM only)


class MmioExit(_Exit):
    """A guest access to a physical address with no RAM behind it."""

    __slots__ = ("addr", "data", "is_write", "length")

    def __init__(self, addr: int, length: int, is_write: bool, data: bytes) -> None:
        self.addr, self.length, self.is_write, self.data = addr, length, is_write, data


class HltExit(_Exit):
    """The guest executed HLT (and no in-kernel irqchip absorbed it)."""

    __slots__ = ()


class ShutdownExit(_Exit):
    """KVM_EXIT_SHUTDOWN: a triple fault (or a shutdown the CPU could not avoid)."""

    __slots__ = ()


class InternalErrorExit(_Exit):
    """KVM could not handle something itself, e.g. an instruction it cannot emulate."""

    __slots__ = ("data", "insn_bytes", "suberror")

    def __init__(self, suberror: int, data: tuple[int, ...], insn_bytes: bytes | None) -> None:
        self.suberror, self.data = suberror, data
        self.insn_bytes = insn_bytes  # present for emulation failures when the kernel supplies them


class FailEntryExit(_Exit):
    """The hardware refused to enter the guest (invalid state)."""

    __slots__ = ("cpu", "hardware_reason")

    def __init__(self, hardware_reason: int, cpu: int) -> None:
        self.hardware_reason, self.cpu = hardware_reason, cpu


class SystemEventExit(_Exit):
    """The guest asked for a shutdown/reset/crash through a paravirtual interface."""

    __slots__ = ("data", "type")

    def __init__(self, type: int, data: tuple[int, ...]) -> None:
        self.type, self.data = type, data


class DebugExit(_Exit):
    """A breakpoint or single step stopped the guest (KVM_GUESTDBG_*)."""

    __slots__ = ("dr6", "dr7", "exception", "pc")

    def __init__(self, exception: int, pc: int, dr6: int, dr7: int) -> None:
        self.exception, self.pc, self.dr6, self.dr7 = exception, pc, dr6, dr7


class InterruptedExit(_Exit):
    """KVM_RUN returned because the VMM asked it to (signal / immediate_exit)."""

    __slots__ = ()


class UnsupportedExit(_Exit):
    """An exit reason minikvm does not handle; the stop report names it."""

    __slots__ = ("name", "reason")

    def __init__(self, reason: int, name: str) -> None:
        self.reason, self.name = reason, name


class AcceleratorErrorExit(_Exit):
    """The accelerator itself cannot go on (the software CPU met something it does not model)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


Exit = (IoExit | MmioExit | HltExit | ShutdownExit | InternalErrorExit | FailEntryExit
        | SystemEventExit | DebugExit | InterruptedExit | UnsupportedExit | AcceleratorErrorExit)
