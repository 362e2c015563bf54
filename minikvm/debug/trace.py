"""The instruction trace (--trace N, --trace-file F), and what this host's KVM can do for a debugger.

A trace entry is one executed instruction: its linear address, its bytes,
the disassembly, and the registers it changed. The accelerators feed it
differently (the software CPU from a per-instruction hook that exists only
while tracing; KVM from KVM_GUESTDBG_SINGLESTEP, one KVM_EXIT_DEBUG per
instruction), but both call `InstructionTrace.begin` with the state just
before each instruction, so the changes of one instruction are the
difference between its state and the next one's.

What KVM can do for a debugger differs per host and is measured here, with
throw-away VMs, like accel.py measures the CPU modes: single-stepping at
CPL0 and at CPL3 (kvm-pvm delivers the debug exception of a CPL3 step into
the guest, which then triple-faults), instruction breakpoints and data
watchpoints in the debug registers DR0-DR3.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from ..arch.x86.decoder import engine
from ..arch.x86.state import Mode

if TYPE_CHECKING:
    from ..machine import Machine

# The registers a trace compares, in the order the accelerators sample them. Values are
# the full registers; 16/32-bit instructions show them under their 32-bit names.
GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp")
GPRS_WIDE = tuple(f"r{n}" for n in range(8, 16))
SYSTEM = ("cs", "ss", "ds", "es", "fs", "gs", "cr0", "cr2", "cr3", "cr4")
NAMES = (*GPRS, "rflags", *SYSTEM)  # what a 16/32-bit software CPU has
NAMES_WIDE = (*GPRS, *GPRS_WIDE, "rflags", *SYSTEM)  # KVM, and a 64-bit software CPU
_NARROW = {name: "e" + name[1:] for name in (*GPRS, "rflags")}

_BYTES_SHOWN = 8  # instruction bytes per line; longer instructions end in '…'


@dataclass(slots=True)
class TracedInstruction:
    pc: int  # linear address
    code: bytes
    bits: int  # 16, 32 or 64: how to decode it
    changes: tuple[tuple[str, int], ...]  # (register, new value)
    note: str = ""


class InstructionTrace:
    """The last `depth` instructions in a ring, and optionally every one in a file as it runs."""

    def __init__(self, depth: int, file: IO[str] | None = None,
                 describe: Callable[[int], str | None] | None = None,
                 file_failed: Callable[[str], None] = lambda why: None) -> None:
        self.depth = depth
        self.ring: deque[TracedInstruction | str] = deque(maxlen=max(depth, 0))
        self.file = file
        self.file_failed = file_failed  # told once, why, when the file cannot be written (a full disk)
        self.failure: str | None = None  # that why, for whoever looks after the run
        self.describe = describe  # address → 'symbol+0x4' (None: no symbols)
        self.count = 0  # instructions traced in all
        self._pending: tuple[int, bytes, int, Sequence[str], Sequence[int]] | None = None

    @property
    def pending_pc(self) -> int | None:
        """The instruction about to run (begun, not yet known to have completed)."""
        return self._pending[0] if self._pending is not None else None

    def begin(self, pc: int, code: bytes, bits: int, names: Sequence[str], values: Sequence[int]) -> None:
        """The CPU is about to execute the instruction at `pc`; the previous one has completed."""
        if self._pending is not None:
            self._complete(names, values, "")
        self._pending = (pc, code, bits, names, values)

    def finish(self, names: Sequence[str] | None, values: Sequence[int] | None, include_pending: bool,
               note: str = "", ended: str = "") -> None:
        """The run ended: the pending instruction counts when the guest stopped on it.
        `ended` closes the file: how the run ended."""
        if self._pending is not None and include_pending:
            self._complete(names, values, note)
        self._pending = None
        if ended:
            self._write(f"  … {ended}\n")
        self.flush()

    def annotate(self, pc: int, note: str) -> None:
        """Note why the run ended on the last traced instruction, when it is the one at `pc`."""
        last = self.ring[-1] if self.ring else None
        if isinstance(last, TracedInstruction) and last.pc == pc and not last.note:
            last.note = note

    def drop_pending(self) -> None:
        """The begun instruction will not run as begun (the trace pauses here)."""
        self._pending = None

    def gap(self, text: str) -> None:
        """A line between instructions: the trace skipped some (e.g. CPL3 code KVM cannot step)."""
        self.ring.append(text)
        self._write(f"  {text}\n")

    def _complete(self, names: Sequence[str] | None, values: Sequence[int] | None, note: str) -> None:
        assert self._pending is not None
        pc, code, bits, before_names, before = self._pending
        changes: tuple[tuple[str, int], ...] = ()
        if values is not None and names is before_names:
            changes = tuple((n, v) for n, a, v in zip(names, before, values, strict=True) if a != v)
        elif values is not None and names is not None:
            old = dict(zip(before_names, before, strict=True))
            changes = tuple((n, v) for n, v in zip(names, values, strict=True) if old.get(n) != v)
        entry = TracedInstruction(pc, code, bits, changes, note)
        self.count += 1
        if self.depth > 0:
            self.ring.append(entry)
        if self.file is not None:
            self._write(self.format(entry) + "\n")

    def flush(self) -> None:
        if self.file is not None:
            self._write("", flush=True)

    def _write(self, text: str, flush: bool = False) -> None:
        file = self.file
        if file is None:
            return
        try:
            file.write(text)
            if flush:
                file.flush()
        except OSError as err:
            self.file = None  # nothing more goes to it; the ring still keeps the last instructions
            try:
                file.close()
            except OSError:
                pass  # its buffer cannot be written either: that is what is being reported
            self.failure = f"the trace file failed ({err.strerror or err})"
            self.file_failed(self.failure)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    # --- words ---------------------------------------------------------------------

    def report(self) -> list[str]:
        """The ring as the stop report shows it: a header line, then one line per instruction."""
        entries = list(self.ring)
        if not entries:
            return []
        shown = sum(1 for e in entries if isinstance(e, TracedInstruction))
        return [f"the last {shown} instruction{'s' if shown != 1 else ''} executed, oldest first "
                "(linear address, bytes, instruction, registers it changed):",
                *("  " + (e if isinstance(e, str) else self.format(e)) for e in entries)]

    def format(self, entry: TracedInstruction) -> str:
        width = 16 if entry.pc > 0xFFFFFFFF else 8
        text, size = self._disassemble(entry)
        code = entry.code[:size] if size else entry.code[:1]
        raw = code[:_BYTES_SHOWN].hex(" ") + ("…" if len(code) > _BYTES_SHOWN else "")
        where = f"{entry.pc:0{width}x}"
        if self.describe is not None:
            symbol = self.describe(entry.pc)
            where += f" {'<' + symbol + '>' if symbol else '':<20}"
        changes = " ".join(f"{self._name(n, entry.bits)}={v:#x}" for n, v in entry.changes if n != "rip")
        line = f"{where}  {raw:<24} {text:<30} {changes}".rstrip()
        return f"{line}  ({entry.note})" if entry.note else line

    @staticmethod
    def _name(name: str, bits: int) -> str:
        return name if bits == 64 else _NARROW.get(name, name)

    def _disassemble(self, entry: TracedInstruction) -> tuple[str, int]:
        """The instruction's text and length (the accelerator may have handed over more bytes)."""
        for insn in engine(entry.bits).disasm(entry.code, entry.pc, 1):
            return f"{insn.mnemonic} {insn.op_str}".strip(), insn.size
        return "(does not decode)", 0


def trace_lines(machine: Machine, describe: Callable[[int], str | None] | None = None) -> list[str]:
    """The stop report's trace section for `machine` (empty without --trace N).

    Call it once the machine's run has returned (its RunResult exists): the
    last instruction is only settled then.
    """
    control = getattr(machine.loop, "debugger", None)
    trace: InstructionTrace | None = getattr(control, "trace", None)
    if trace is None:
        return []
    if describe is not None and trace.describe is None:
        trace.describe = describe
    return trace.report()


# --- what this host's KVM can do for a debugger ------------------------------------


@dataclass(frozen=True)
class KvmDebugSupport:
    single_step: bool  # KVM_GUESTDBG_SINGLESTEP gives one KVM_EXIT_DEBUG per instruction at CPL0
    breakpoints: bool  # instruction breakpoints in DR0-DR3 (KVM_GUESTDBG_USE_HW_BP)
    watchpoints: bool  # data write breakpoints in DR0-DR3


_PROBE_RAM = 4 * 1024 * 1024
_PROBE_DATA = 0x3000  # a data address inside RAM, away from the probe code
_NOPS = bytes([0x90, 0x90, 0x90, 0x90])
_END = bytes([0xE6, 0x80, 0xF4])  # out %al, $0x80; hlt
# mov %eax, _PROBE_DATA (mov %ax in 16-bit code): a data write for the watchpoint probe
_STORE = {Mode.REAL: bytes([0xA3, 0x00, 0x30]), Mode.PROTECTED: bytes([0xA3, 0x00, 0x30, 0x00, 0x00]),
          Mode.PAGING: bytes([0xA3, 0x00, 0x30, 0x00, 0x00]), Mode.LONG: bytes.fromhex("89 04 25 00 30 00 00")}


def _run_probe(mode: Mode, code: bytes, debug: Callable[[object, int], None], user: bool = False) -> tuple[object, int]:
    """Run `code` in a throw-away VM after `debug(vcpu, entry)`; the first exit and the RIP after it."""
    from ..arch.x86.cpustate import apply_to_sregs, regs_to_kvm
    from ..arch.x86.descriptors import (
        ACCESS_CODE_RING3,
        ACCESS_DATA_RING3,
        FLAGS_32BIT_4K,
        FLAGS_64BIT_CODE,
        Descriptor,
        Segment,
    )
    from ..boot.flat import load_flat
    from ..boot.paging_layout import load_paging_abi
    from ..kvm.system import Kvm
    from ..memory import GuestMemory

    kvm = Kvm()
    memory = GuestMemory([(0, _PROBE_RAM)])
    vm = vcpu = None
    try:
        if mode is Mode.PAGING:
            state = load_paging_abi(memory, code, "<probe>", entry=0x1000)  # the identity-mapped alias
        else:
            state = load_flat(memory, code, mode, "<probe>")
        if user:  # the ABI's GDT has ring-3 code and data at 0x18 and 0x20
            code_flags = FLAGS_64BIT_CODE if mode is Mode.LONG else FLAGS_32BIT_4K
            cs = Segment.from_descriptor(0x1B, Descriptor(0, 0xFFFFF, ACCESS_CODE_RING3, code_flags))
            data = Segment.from_descriptor(0x23, Descriptor(0, 0xFFFFF, ACCESS_DATA_RING3, FLAGS_32BIT_4K))
            state.segments.update(cs=cs, ss=data, ds=data, es=data, fs=data, gs=data)
        vm = kvm.create_vm()
        vm.set_user_memory_region(0, 0, _PROBE_RAM, memory.regions[0].host_addr)
        vcpu = vm.create_vcpu(0)
        vcpu.set_cpuid2(kvm.supported_cpuid())
        vcpu.set_sregs(apply_to_sregs(state, vcpu.get_sregs()))
        vcpu.set_regs(regs_to_kvm(state))
        entry = state.regs["rip"]
        debug(vcpu, entry)
        exit = vcpu.run()
        return exit, vcpu.get_regs().rip
    finally:
        for thing in (vcpu, vm, memory, kvm):
            if thing is not None:
                thing.close()


def _probe_step(mode: Mode, user: bool = False) -> bool:
    from ..kvm.exits import DebugExit
    from ..kvm.system import DR6_BS

    exit, rip = _run_probe(mode, _NOPS + _END, lambda vcpu, entry: vcpu.set_debug(single_step=True), user)
    return isinstance(exit, DebugExit) and bool(exit.dr6 & DR6_BS) and rip == _entry(mode) + 1


def _entry(mode: Mode) -> int:
    from ..boot.layout import PM_LOAD, REAL_LOAD

    return REAL_LOAD if mode is Mode.REAL else PM_LOAD


def _probe_breakpoint(mode: Mode) -> bool:
    from ..kvm.exits import DebugExit
    from ..kvm.system import DR_EXECUTE

    target = _entry(mode) + 2
    exit, rip = _run_probe(mode, _NOPS + _END,
                           lambda vcpu, entry: vcpu.set_debug(slots=[(target, DR_EXECUTE, 1)]))
    return isinstance(exit, DebugExit) and bool(exit.dr6 & 1) and rip == target


def _probe_watchpoint(mode: Mode) -> bool:
    from ..kvm.exits import DebugExit
    from ..kvm.system import DR_WRITE

    exit, _ = _run_probe(mode, _STORE[mode] + _NOPS + _END,
                         lambda vcpu, entry: vcpu.set_debug(slots=[(_PROBE_DATA, DR_WRITE, 2)]))
    return isinstance(exit, DebugExit) and bool(exit.dr6 & 1)


def _safely(probe: Callable[[], bool]) -> bool:
    from ..errors import MinikvmError

    try:
        return probe()
    except (MinikvmError, ValueError):
        return False


@functools.cache
def kvm_debug_support(mode: Mode) -> KvmDebugSupport:
    """What this host's KVM can do for a debugger of a `mode` guest at CPL0 (measured once per process)."""
    return KvmDebugSupport(single_step=_safely(lambda: _probe_step(mode)),
                           breakpoints=_safely(lambda: _probe_breakpoint(mode)),
                           watchpoints=_safely(lambda: _probe_watchpoint(mode)))


@functools.cache
def kvm_steps_at_cpl3(long_mode: bool) -> bool:
    """Does single-stepping CPL3 code exit to the VMM? (kvm-pvm: not in 64-bit code, where the
    debug exception goes into the guest instead and triple-faults it.)"""
    return _safely(lambda: _probe_step(Mode.LONG if long_mode else Mode.PROTECTED, user=True))


def debug_support_lines() -> list[str]:
    """For `minikvm host`: the debugger features per mode, measured now."""
    lines = []
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    for mode in (Mode.REAL, Mode.PROTECTED, Mode.LONG):
        s = kvm_debug_support(mode)
        lines.append(f"  {'debugging ' + mode.label:<44} single-step {yes(s.single_step)}, "
                     f"breakpoints {yes(s.breakpoints)}, watchpoints {yes(s.watchpoints)}")
    for long_mode in (False, True):
        label = f"single-step at CPL3, {'64' if long_mode else '32'}-bit"
        lines.append(f"  {label:<44} {yes(kvm_steps_at_cpl3(long_mode))}")
    return lines
