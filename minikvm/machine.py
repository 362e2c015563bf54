"""A machine: one guest in one VM — memory, devices, a vCPU, and its run.

`run_machines` runs several machines in parallel, one thread each, and is
the only place that knows about threads, signals and the timeout.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .arch.x86.cpustate import apply_to_sregs, is_reset_state, regs_to_kvm
from .arch.x86.registers import EFER_LMA, RFLAGS_IF
from .arch.x86.state import BootState, Mode
from .boot.select import BootRequest, load_guest
from .devices import layout as ports
from .devices.bus import Bus
from .devices.hypercall import HypercallPort
from .devices.input import EofWatch, InputBuffer
from .devices.irq import IrqLine
from .devices.legacy import I8042, DebugExit, FastA20, NullDevice
from .devices.uart import IER_ERBFI, IER_ETBEI, MCR_LOOP, MCR_OUT2, Uart16550
from .devices.vga import TEXT_BASE, TEXT_WINDOW_END, TextScreen, VgaCrtc, read_screen
from .errors import MinikvmError, printable
from .kvm.exits import HltExit, InternalErrorExit, IoExit
from .kvm.system import Kvm, Vcpu
from .kvm.uapi import KVM_MP_STATE_HALTED, kvm_regs, kvm_sregs
from .memory import GuestMemory
from .probe import io_exit_rip_after_insn
from .runloop import ExitStats, RunLoop
from .stop import StopKind, StopReason

if TYPE_CHECKING:  # the software CPU pulls in Unicorn: import it only where it is used
    from .emu.cpu import Emu, EmuVcpu

# KVM on Intel needs three pages for the real-mode TSS somewhere the guest
# cannot see; just below 4 GiB, far above any RAM a guest here gets.
KVM_TSS_ADDR = 0xFFFBD000
_KICK_SIGNAL = signal.SIGUSR1
_EOF_SILENCE = 2.0  # silence after the end of input that means an interrupt-driven guest waits for more
_POLL_SECONDS = 0.05  # how often a halted in-kernel-irqchip vCPU is checked for HLT with IF=0
KVM_PIT_SPEAKER_DUMMY = 1  # KVM_CREATE_PIT2 flag: KVM also answers the speaker port 0x61


@dataclass
class GuestSpec:
    """One guest: what to load and how."""

    name: str
    path: str
    image: bytes
    mode: Mode
    memory: int
    load: int | None = None
    entry: int | None = None
    pages: str = "4k"
    cr0: int | None = None
    cr4: int | None = None
    cmdline: str = ""
    interrupts: bool = False  # PIC + PIT (+ the UART's IRQ 4): in-kernel on KVM, modelled on the software CPU

    def boot_request(self) -> BootRequest:
        return BootRequest(self.image, self.path, self.mode, self.load, self.entry, self.pages, self.cr0,
                           self.cr4, self.cmdline)


@dataclass
class MachineConfig:
    guest: GuestSpec
    input_grace: float = 0.5  # seconds a guest may poll an exhausted input before it is stopped
    trace: Callable[[str], None] | None = None  # --verbose: setup steps and one line per exit


@dataclass
class CpuSnapshot:
    """The vCPU as it was when the guest stopped, for the stop report."""

    mode: Mode
    regs: kvm_regs
    sregs: kvm_sregs
    code: bytes  # the instruction bytes at `rip` (KVM's own copy when it gave one)
    reset_state: bool  # the registers are the CPU's reset state, not the fault's
    chain: list = field(default_factory=list)  # the exception chain, where the accelerator saw it (emu.ChainLink)


@dataclass
class RunResult:
    name: str
    stop: StopReason
    stats: ExitStats
    wall_seconds: float
    snapshot: CpuSnapshot | None = None  # taken for abnormal stops
    unclaimed: Counter[tuple[int, str]] = field(default_factory=Counter)
    accel: str = "kvm"


class _HypercallAdapter:
    """Port 0x500 on the bus: the number is the OUT value (AL), the argument is the guest's BL."""

    def __init__(self, hypercall: HypercallPort, vcpu: Vcpu | EmuVcpu) -> None:
        self.hypercall = hypercall
        self.vcpu = vcpu

    def read(self, offset: int, size: int) -> int:
        return self.hypercall.read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.hypercall.call(value & 0xFF, self.vcpu.exit_regs().rbx & 0xFF)


class _CoalescingUart:
    """The UART on the bus, with KVM buffering THR writes while that is invisible to the guest.

    Buffered writes reach the UART at the next exit, in order. That is only
    safe while no interrupt or loopback depends on a THR write being seen at
    once, so buffering stops for good when the guest enables the THR-empty
    interrupt or loopback mode. The zone is registered at the guest's first
    UART write: a VM with one costs KVM about 14 ms more to destroy, which a
    guest that never uses the UART should not pay.
    """

    def __init__(self, uart: Uart16550, vm_register: Callable[[], None], vm_unregister: Callable[[], None]) -> None:
        self.uart = uart
        self._register = vm_register
        self._unregister = vm_unregister
        self.state = "idle"  # idle → coalescing → off

    def read(self, offset: int, size: int) -> int:
        return self.uart.read(offset, size)

    def write_bytes(self, offset: int, data: bytes) -> None:
        self.uart.write_bytes(offset, data)  # only THR writes are coalesced: no state change to watch

    def write(self, offset: int, size: int, value: int) -> None:
        self.uart.write(offset, size, value)
        if self.state == "off":
            return
        state = self.uart.state()
        if state.ier & IER_ETBEI or state.mcr & MCR_LOOP:
            if self.state == "coalescing":
                self._unregister()
            self.state = "off"
        elif self.state == "idle":
            self._register()
            self.state = "coalescing"


class _Shifted:
    """A device seen at an offset: the i8042's command port sits 4 ports above its data port."""

    def __init__(self, device: I8042, offset: int) -> None:
        self.device = device
        self.offset = offset

    def read(self, offset: int, size: int) -> int:
        return self.device.read(offset + self.offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.device.write(offset + self.offset, size, value)


class Machine:
    """One guest in its own VM, on KVM or the software CPU."""

    def __init__(self, config: MachineConfig, accel: Kvm | Emu, output: Callable[[bytes], None],
                 input: InputBuffer | None = None) -> None:
        self.config = config
        self.name = config.guest.name
        self.output = output
        self.stats = ExitStats()
        self.vm = None
        self.vcpu: Vcpu | EmuVcpu | None = None
        self._thread_ident: int | None = None
        self.accel = accel
        self.input = input
        self.last_output = 0.0
        self._eof_since: float | None = None
        self.memory = GuestMemory([(0, config.guest.memory)])
        try:
            self._build(accel, input)
        except BaseException:
            self.close()
            raise

    def _note(self, text: str) -> None:
        if self.config.trace is not None:
            self.config.trace(text)

    def _build(self, accel: Kvm | Emu, input: InputBuffer | None) -> None:
        guest = self.config.guest
        self.boot = load_guest(self.memory, guest.boot_request(), note=self._note)
        self._note(f"loaded {len(guest.image)} bytes from {printable(guest.path)} ({self.boot.mode.label}), "
                   f"{self.memory.size // 1024} KiB RAM, entry {self.boot.regs['rip']:#x}")
        self.vm = accel.create_vm()
        self.vm.set_tss_addr(KVM_TSS_ADDR)
        region = self.memory.regions[0]
        self.vm.set_user_memory_region(0, region.guest_addr, region.size, region.host_addr)
        self.in_kernel_irqchip = guest.interrupts and accel.name == "kvm"
        if self.in_kernel_irqchip:
            # KVM's own PIC, IOAPIC, LAPIC and PIT; they must exist before the vCPU.
            self.vm.create_irqchip()
            self.vm.create_pit2(KVM_PIT_SPEAKER_DUMMY)
            self._note("interrupts: KVM's in-kernel PIC and PIT")
        self.vcpu = self.vm.create_vcpu(0)
        self._apply(self.boot)
        self.ports = Bus()
        self.loop = RunLoop(self.vcpu, self.ports, self.stats, trace=self.config.trace)
        self.loop.kick = self._kick
        if self.in_kernel_irqchip:
            self.loop.idle_check = self._halted_for_good
        self._attach_devices(input)

    def _apply(self, state: BootState) -> None:
        vcpu = self.vcpu
        assert vcpu is not None
        # Long mode needs CPUID to admit it (KVM refuses EFER.LME otherwise).
        vcpu.set_cpuid2(self.accel.supported_cpuid())
        try:
            vcpu.set_sregs(apply_to_sregs(state, vcpu.get_sregs()))
        except MinikvmError as err:  # EINVAL or a CPU exception alone would not say that the state is the problem
            who = "KVM" if self.accel.name == "kvm" else "the software CPU"
            raise MinikvmError(f"{who} refused the start state CR0={state.cr0:#x} CR4={state.cr4:#x} "
                               f"EFER={state.efer:#x}: {err}") from None
        vcpu.set_regs(regs_to_kvm(state))
        self._note(f"vCPU set up for {state.mode.label}: CR0={state.cr0:#x} CR3={state.cr3:#x} "
                   f"CR4={state.cr4:#x} EFER={state.efer:#x}")

    def _attach_devices(self, input: InputBuffer | None) -> None:
        stop, out, grace = self.loop.request_stop, self._output_and_note, self.config.input_grace
        bus = self.ports
        uart_irq = self._attach_interrupts(bus) if self.config.guest.interrupts else None
        self.uart = Uart16550(out, input=input, irq=uart_irq, eof=EofWatch(grace), stop=stop)
        if input is not None and uart_irq is not None:
            input.on_data = self.uart.poll_input  # new input raises IRQ 4 when the guest enabled it
        self.hypercall = HypercallPort(out, stop, input=input, eof=EofWatch(grace))
        vm = self.vm
        assert vm is not None and self.vcpu is not None
        self.uart_coalescing: _CoalescingUart | None = None
        com1: object = self.uart
        if vm.coalesced_pio_supported():
            self.uart_coalescing = _CoalescingUart(
                self.uart, lambda: vm.register_coalesced_pio(ports.COM1.base, 1),
                lambda: vm.unregister_coalesced_pio(ports.COM1.base, 1))
            com1 = self.uart_coalescing
            self._note("UART transmit writes are coalesced by KVM (no exit per character)")
        bus.register(*ports.COM1, com1, "COM1 16550A UART")  # type: ignore[arg-type]
        bus.register(*ports.HYPERCALL, _HypercallAdapter(self.hypercall, self.vcpu), "hypercall port")
        bus.register(*ports.FAST_A20, FastA20(stop), "port 0x92 (fast A20)")
        i8042 = I8042(stop)
        bus.register(ports.I8042.base, 1, i8042, "i8042 data")
        bus.register(ports.I8042.base + I8042.COMMAND, 1, _Shifted(i8042, I8042.COMMAND), "i8042 status/command")
        bus.register(*ports.DEBUG_EXIT, DebugExit(stop), "debug-exit port")
        self.vga = VgaCrtc()
        bus.register(*ports.VGA, self.vga, "VGA (colour text mode)")
        absent = [(ports.CMOS, "CMOS (absent)"), (ports.POST, "POST")]
        if not self.config.guest.interrupts:
            absent += [(ports.PIC_MASTER, "PIC (absent)"), (ports.PIC_SLAVE, "PIC slave (absent)"),
                       (ports.PIT, "PIT (absent)"), (ports.SYSTEM_CONTROL, "port 0x61 (absent)")]
        for rng, name in absent:
            bus.register(*rng, NullDevice(), name)
        for base, length, name in bus.devices():
            self._note(f"port {base:#06x}-{base + length - 1:#06x}: {name}")

    def _attach_interrupts(self, bus: Bus) -> IrqLine:
        """The PIC/PIT pair for this guest; returns the UART's IRQ 4 line."""
        from .devices.pic import Pic8259Pair
        from .devices.pit import Pit8254
        from .devices.sysctl import SystemControlPortB

        vm, vcpu = self.vm, self.vcpu
        assert vm is not None and vcpu is not None
        if self.in_kernel_irqchip:
            return IrqLine(lambda level: vm.irq_line(ports.COM1_IRQ, level))  # type: ignore[union-attr]
        assert not isinstance(vcpu, Vcpu), "KVM guests use the in-kernel irqchip"
        pic = Pic8259Pair(on_change=vcpu.interrupt_raised)
        pit = Pit8254(IrqLine(lambda level: pic.set_irq(0, level)))
        bus.register(*ports.PIC_MASTER, pic.master_ports, "8259A PIC (master)")
        bus.register(*ports.PIC_SLAVE, pic.slave_ports, "8259A PIC (slave)")
        bus.register(*ports.PIT, pit, "8254 PIT")
        bus.register(*ports.SYSTEM_CONTROL, SystemControlPortB(pit), "port 0x61 (system control B)")
        vcpu.attach_interrupts(pic, pit)
        self._note("interrupts: minikvm's 8259A PIC and 8254 PIT models")
        return IrqLine(lambda level: pic.set_irq(ports.COM1_IRQ, level))

    def _halted_for_good(self) -> StopReason | None:
        """With KVM's irqchip, HLT never exits: a periodic kick lets us see a vCPU halted with IF=0."""
        vcpu = self.vcpu
        assert vcpu is not None
        if vcpu.get_mp_state() == KVM_MP_STATE_HALTED and not vcpu.get_regs().rflags & RFLAGS_IF:
            self.loop.last_exit = HltExit()  # the stop report points at the HLT, as after a HLT exit
            return StopReason(StopKind.HALT, "halted (HLT) with interrupts disabled")
        return None

    def screen(self) -> TextScreen | None:
        """The VGA text screen as the guest left it in RAM (None when RAM does not reach 0xB8000)."""
        if not self.memory.contains(TEXT_BASE, TEXT_WINDOW_END - TEXT_BASE):
            return None
        return read_screen(self.memory.read, self.vga)

    def _output_and_note(self, data: bytes) -> None:
        self.last_output = time.monotonic()
        self.output(data)

    def poll(self) -> None:
        """Called every few tens of milliseconds from the thread that runs the machines."""
        if self.in_kernel_irqchip:
            self._kick()
        self._check_input_exhausted()

    def _check_input_exhausted(self) -> None:
        """An interrupt-driven guest waiting for input after the end of input never polls, so the
        UART's own check cannot see it: it has an interrupt controller and the UART's receive
        interrupt on, the input has ended, and it has been silent since for a while."""
        uart = self.uart.state()
        interrupt_driven = self.config.guest.interrupts and uart.ier & IER_ERBFI and uart.mcr & MCR_OUT2
        if self.input is None or not self.input.at_eof or not interrupt_driven:
            self._eof_since = None
            return
        now = time.monotonic()
        if self._eof_since is None:
            self._eof_since = now
        quiet = max(_EOF_SILENCE, 4 * self.config.input_grace)
        if now - max(self._eof_since, self.last_output) >= quiet:
            self.request_stop(StopReason(StopKind.INPUT_EOF, "waiting for input after end of input (the guest "
                                         f"takes UART input and has been silent for {quiet:g} s since it ended)"))

    # --- running -------------------------------------------------------------

    def _kick(self) -> None:
        ident = self._thread_ident
        if ident is not None and ident != threading.get_ident():
            try:
                signal.pthread_kill(ident, _KICK_SIGNAL)
            except ProcessLookupError:
                pass  # the thread has already finished

    def request_stop(self, reason: StopReason) -> None:
        self.loop.request_stop(reason)

    def run(self) -> RunResult:
        self._thread_ident = threading.get_ident()
        started = time.perf_counter()
        stop: StopReason | None = None
        try:
            try:
                stop = self.loop.run()
            except MinikvmError as err:  # KvmError, or the software CPU's EmuError
                stop = StopReason(StopKind.ACCEL_ERROR, f"accelerator failure: {err}")
            wall = time.perf_counter() - started
            deliverer = getattr(self.vcpu, "deliverer", None)  # the software CPU delivers (and counts) them
            if deliverer is not None:
                self.stats.interrupts = Counter(deliverer.delivered)
            stop, snapshot = self._snapshot(stop)
        finally:
            if self.loop.debugger is not None:  # a trace settles its last instruction, gdb hears of the end
                self.loop.debugger.finished(stop or StopReason(StopKind.ACCEL_ERROR, "internal error"))
        return RunResult(self.name, stop, self.stats, wall, snapshot, self.ports.unclaimed, self.accel.name)

    def _snapshot(self, stop: StopReason) -> tuple[StopReason, CpuSnapshot | None]:
        """Where the guest stopped, and for abnormal stops the state that shows why."""
        vcpu = self.vcpu
        assert vcpu is not None
        if stop.kind in (StopKind.TIMEOUT, StopKind.INTERRUPTED, StopKind.OUTPUT_FAILED):
            return stop, None
        regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
        reset = stop.kind is StopKind.TRIPLE_FAULT and is_reset_state(regs, sregs)
        # 64-bit code ignores the CS base; otherwise linear addresses wrap at 4 GiB.
        long_code = bool(sregs.cs.l and sregs.efer & EFER_LMA)
        cs_base = 0 if long_code else sregs.cs.base
        rip = self._stop_address(stop, regs.rip, cs_base)
        if not reset:
            stop = replace(stop, rip=rip)
        if stop.clean:
            return stop, None
        exit = self.loop.last_exit
        code = exit.insn_bytes if isinstance(exit, InternalErrorExit) and exit.insn_bytes else None
        if code is None:
            code = b"" if reset else self._read_code(cs_base + rip if long_code else (cs_base + rip) & 0xFFFFFFFF)
        regs.rip = rip
        return stop, CpuSnapshot(self.boot.mode, regs, sregs, code, reset, list(getattr(self.vcpu, "chain", [])))

    def _stop_address(self, stop: StopReason, rip: int, cs_base: int) -> int:
        """The address of the instruction that ended the run, not the one after it."""
        exit = self.loop.last_exit
        if isinstance(exit, IoExit):
            io_rip = getattr(self.vcpu, "io_rip", None)  # the software CPU records it
            if io_rip is not None:
                return io_rip
            # An IN exits before the instruction completes (the data comes on the next run), so RIP
            # is still at it; only an OUT may have been completed already (the probe says).
            if exit.is_write and io_exit_rip_after_insn():
                return self._out_instruction_before(cs_base + rip) - cs_base
        if isinstance(exit, HltExit) and self._read_code(cs_base + rip - 1, 1) == b"\xf4":
            return rip - 1
        return rip

    def _read_code(self, linear: int, length: int = 15) -> bytes:
        """Up to `length` bytes at a linear address, through the guest's page tables when paging is on."""
        from .arch.x86.walk import EXECUTE, read_linear

        if self.vcpu is None:
            return read_linear(self.memory.read, 0, 0, 0, 0, linear, length)
        sregs = self.vcpu.get_sregs()
        return read_linear(self.memory.read, sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer, linear, length, EXECUTE)

    def _out_instruction_before(self, linear: int) -> int:
        """The start of the OUT that ends just before `linear` (the host moved RIP past it)."""
        before = self._read_code(max(linear - 3, 0), min(linear, 3))
        # out dx,al/ax|eax is EE/EF (one byte, maybe after a 66 prefix); out imm8 is E6/E7 ib.
        if before[-1:] in (b"\xee", b"\xef"):
            return linear - (2 if before[-2:-1] == b"\x66" else 1)
        return linear - 2

    def close(self) -> None:
        """Release the vCPU, the VM, then the memory they point into."""
        if self.vcpu is not None:
            self.vcpu.close()
        if self.vm is not None:
            self.vm.close()
        self.memory.close()


# Signals that stop the guests as Ctrl-C does, raising KeyboardInterrupt on the main thread: SIGINT itself,
# SIGTERM through the command line, and through the console those that would otherwise kill us with the
# terminal still raw. Not the kick signal (it only interrupts KVM_RUN), nor SIGXFSZ and SIGPIPE, which
# Python ignores (a write fails instead).
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2,
                          signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGXCPU, signal.SIGIO,
                          signal.SIGPWR})


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """The stop signals wait for the end of the block, then act as they would have.

    Blocking them is not enough on its own: a process-directed signal goes to any thread that does not
    block it (the output writer, the stdin reader), and Python then runs the handler on the main thread
    wherever it is. So their Python handlers only note the signal meanwhile. The mask stays too, as the
    threads started here inherit it: these signals never interrupt a vCPU thread."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs Python signal handlers (and may set them)
        return
    arrived: list[int] = []
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    deferred = {signum: handler for signum, handler in handlers.items() if callable(handler)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        for signum in deferred:
            signal.signal(signum, lambda signum, frame: arrived.append(signum))
        yield
    finally:
        for signum, handler in deferred.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if arrived:
        deferred[arrived[0]](arrived[0], None)  # KeyboardInterrupt, as it would have been


def _ignore_kick(signum: int, frame: object) -> None:
    """The kick only has to interrupt KVM_RUN; there is nothing to do when it lands."""


def _install_kick_handler() -> None:
    """A no-op handler for the kick signal, so it interrupts KVM_RUN instead of killing us.

    It stays installed after the run: a kick sent just as a vCPU thread finished may still be
    delivered later, and with the default action it would kill the process."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(_KICK_SIGNAL, _ignore_kick)


def run_machines(machines: list[Machine], timeout: float | None = None,
                 on_result: Callable[[RunResult], None] | None = None,
                 on_tick: Callable[[], None] | None = None,
                 on_interrupt: Callable[[], None] | None = None) -> list[RunResult]:
    """Run every machine in its own thread; stop all on timeout or Ctrl-C.

    `on_tick` is called every few tens of milliseconds on this thread (e.g. to redraw a screen);
    `on_interrupt` at Ctrl-C, before the machines are asked to stop (e.g. to stop waiting for a reader).
    """
    _install_kick_handler()
    results: dict[int, RunResult] = {}
    failures: list[Exception] = []  # raised by on_result on a vCPU thread, re-raised here
    done = threading.Condition()

    def worker(index: int, machine: Machine) -> None:
        try:
            result = machine.run()
        except Exception as err:
            result = RunResult(machine.name, StopReason(StopKind.ACCEL_ERROR, f"internal error: {err!r}"),
                               machine.stats, 0.0)
        with done:
            results[index] = result
            done.notify_all()
        if on_result is not None:
            try:
                on_result(result)
            except Exception as err:  # a report that cannot be written must not leave a traceback behind
                failures.append(err)

    threads = [threading.Thread(target=worker, args=(i, m), name=f"vcpu-{m.name}", daemon=True)
               for i, m in enumerate(machines)]
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        # Ctrl-C, SIGTERM and the other stop signals wait until every thread has started: an interrupt
        # inside Thread.start left a thread running that nobody joined, reported twice (seen in CI).
        with _stop_signals_held():
            for thread in threads:
                thread.start()
        with done:
            while len(results) < len(machines):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    for machine in machines:
                        machine.request_stop(StopReason(StopKind.TIMEOUT, f"timed out after {timeout:g} s"))
                    deadline = None
                    continue
                done.wait(_POLL_SECONDS if remaining is None else min(remaining, _POLL_SECONDS))
                for machine in machines:
                    machine.poll()
                if on_tick is not None:
                    on_tick()
    except KeyboardInterrupt as interrupt:
        why = str(interrupt) or "interrupted (Ctrl-C)"
        if on_interrupt is not None:
            on_interrupt()
        for machine in machines:
            machine.request_stop(StopReason(StopKind.INTERRUPTED, why))
    except BaseException as err:  # a bug on this thread: the guests must not run on without us
        for machine in machines:
            machine.request_stop(StopReason(StopKind.ACCEL_ERROR, f"stopped: internal error {err!r}"))
        raise
    finally:
        for thread in threads:
            if thread.ident is not None:
                thread.join()
    # A machine whose thread an early Ctrl-C kept from starting never ran: say so, like the others.
    for index, machine in enumerate(machines):
        if index not in results:
            results[index] = RunResult(machine.name, StopReason(StopKind.INTERRUPTED, "interrupted before it started"),
                                       machine.stats, 0.0, accel=machine.accel.name)
            if on_result is not None:
                on_result(results[index])
    if failures:
        raise failures[0]
    return [results[i] for i in range(len(machines))]
