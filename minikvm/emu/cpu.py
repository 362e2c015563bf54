"""The software CPU behind the same surface as kvm.system (`Emu` → `EmuVm` → `EmuVcpu`).

Guest code runs in Unicorn in long slices with no per-instruction hook.
Port I/O and MMIO are handled inline, inside Unicorn's hooks, through the
`inline_exit` callback the run loop installs: the device answers before the
instruction completes, as on KVM. `run()` returns only for what needs the
loop: HLT, a triple fault, a stop request.

A stop asked for inside an I/O hook (EXIT, a reset) cannot end the slice at
once: Unicorn runs the translated block to its end. So the vCPU freezes
there: later I/O in the block reaches no device, and the registers are put
back as they were after the stopping instruction once the slice is over.

Interrupts: when the machine attaches an interrupt controller and a timer,
the slice ends at the timer's next deadline, and a pending vector is
delivered through the guest's IVT/IDT before the next slice (IF=1). HLT
with IF=1 sleeps until a timer deadline, an IRQ or a stop request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import unicorn.x86_const as x86
from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_CODE,
    UC_HOOK_INSN,
    UC_HOOK_INSN_INVALID,
    UC_HOOK_INTR,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_WRITE,
    UC_MODE_16,
    UC_MODE_32,
    UC_MODE_64,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    Uc,
    UcError,
)

from ..arch.x86.cpustate import SEGMENT_NAMES, segment_to_kvm
from ..arch.x86.decoder import engine as decoder
from ..arch.x86.descriptors import Segment, decode_descriptor
from ..arch.x86.registers import CR0_PE, CR0_PG, EFER_LMA, MSR_EFER, RFLAGS_IF, RFLAGS_RF
from ..arch.x86.walk import Op
from ..errors import MinikvmError
from ..kvm import uapi
from ..kvm.exits import AcceleratorErrorExit, DebugExit, Exit, HltExit, InterruptedExit, IoExit, ShutdownExit
from .delivery import ChainLink, Deliverer, DeliveryFault, Event, UnsupportedDelivery
from .guestmem import GuestView, VirtualAccessFault
from .registers import RegisterFile
from .slicer import Slicer

_SLICE_SECONDS = 0.05  # the longest sleep in HLT between two looks at the timer
_MASKED_IRQ_SLICE = 0.0002  # how soon to look again while an IRQ waits for the guest to set IF
_SHORTEST_SLICE = 0.0001  # a deadline already passed still gets this long: the guest makes progress
_SEGMENT_IDS = {"cs": x86.UC_X86_REG_CS, "ds": x86.UC_X86_REG_DS, "es": x86.UC_X86_REG_ES,
                "fs": x86.UC_X86_REG_FS, "gs": x86.UC_X86_REG_GS, "ss": x86.UC_X86_REG_SS}
_UNREACHABLE = 0xFFFF_FFFF_FFFF_FFFF
# Watchpoint kinds (as gdb's Z2/Z3/Z4 name them) and the memory hooks that see them.
_WATCH_HOOKS = {"watch": UC_HOOK_MEM_WRITE, "rwatch": UC_HOOK_MEM_READ, "awatch": UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE}
# The registers `debug_registers` samples, in order (a 16/32-bit engine has no r8-r15).
_DEBUG_REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "rflags",
                    "cs", "ss", "ds", "es", "fs", "gs", "cr0", "cr2", "cr3", "cr4")
_DEBUG_REGISTERS_WIDE = (*_DEBUG_REGISTERS[:8], *(f"r{n}" for n in range(8, 16)), *_DEBUG_REGISTERS[8:])


class EmuError(MinikvmError):
    """The software CPU could not go on (the message names the unsupported feature)."""


class InterruptController(Protocol):
    def pending_vector(self) -> int | None: ...
    def acknowledge(self) -> int: ...


class Timer(Protocol):
    def next_deadline(self) -> float | None: ...
    def advance(self, now: float) -> int: ...


class Emu:
    """Stands where `kvm.system.Kvm` stands: the accelerator's root object."""

    name = "emu"

    def create_vm(self) -> EmuVm:
        return EmuVm()

    def supported_cpuid(self) -> list[uapi.kvm_cpuid_entry2]:
        return []  # Unicorn answers CPUID itself

    def close(self) -> None:
        pass


class EmuVm:
    def __init__(self) -> None:
        self.regions: list[tuple[int, int, int]] = []

    def set_tss_addr(self, addr: int) -> None:
        pass  # a VMX real-mode detail; nothing to do here

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, size: int, host_addr: int,
                               flags: int = 0) -> None:
        self.regions.append((guest_phys_addr, size, host_addr))

    def create_vcpu(self, vcpu_id: int = 0) -> EmuVcpu:
        return EmuVcpu(self)

    def coalesced_pio_supported(self) -> bool:
        return False  # I/O is handled inline: there is no exit to save

    def close(self) -> None:
        pass


def _unicorn_mode(sregs: uapi.kvm_sregs) -> int:
    if sregs.efer & EFER_LMA:
        return UC_MODE_64
    return UC_MODE_32 if sregs.cr0 & CR0_PE else UC_MODE_16


class EmuVcpu:
    def __init__(self, vm: EmuVm) -> None:
        self.vm = vm
        self.uc: Uc | None = None
        self.regs: RegisterFile | None = None
        self.inline_exit: Callable[[Exit], bool] | None = None  # set by the run loop; True: the guest stopped
        self._frozen: uapi.kvm_regs | None = None  # the registers at the I/O instruction that stopped the guest
        self.interrupts: InterruptController | None = None
        self.timer: Timer | None = None
        self.chain: list[ChainLink] = []  # the exception chain, for stop reports
        self.last_event: Event | None = None
        self._in_data = b""
        self._mmio_data = b""
        self._stop_requested = False
        self._restart = False  # an event was delivered from inside a hook: resume in a new emu_start
        self._wake = threading.Event()
        self._runner: int | None = None  # the thread that runs the slices
        self._result: Exit | None = None
        self._pending_regs: uapi.kvm_regs | None = None
        self.unclaimed_mmio = 0
        self.io_rip: int | None = None  # address of the last IN/OUT (stop reports name it)
        # Debugging (set_debug): no hook exists unless a debugger or a trace asks for one.
        self._breakpoints: frozenset[int] = frozenset()
        self._breakpoint_hooks: dict[int, int] = {}
        self._code_hook: int | None = None
        self._watches: list[tuple[int, int, str, object]] = []
        self._watch_hooks: list[int] = []
        self._watch_hit: tuple[object, str] | None = None
        self._step = self._stepped = False
        self._on_instruction: Callable[[int, int], None] | None = None
        self._skip_at: int | None = None
        self._debug_stopping = False
        self.debug_hit: tuple[object, str] | None = None  # (tag, kind) of the watchpoint behind the last DebugExit
        # emu_start calls so far: a stop between a code hook and its instruction makes the next
        # start hook that instruction again, which a trace must not count twice.
        self.starts = 0

    # --- state -------------------------------------------------------------------

    def set_cpuid2(self, entries: list) -> None:
        pass

    def set_sregs(self, sregs: uapi.kvm_sregs) -> None:
        if self.uc is None:
            self._create(_unicorn_mode(sregs))
        try:
            self._load_sregs(sregs)
        except UcError as err:  # the CPU would fault on this state (a reserved CR4 bit, say)
            raise EmuError(str(err)) from None
        if self._pending_regs is not None:  # once: a later set_sregs must not bring back the boot registers
            regs, self._pending_regs = self._pending_regs, None
            self.set_regs(regs)

    def _load_sregs(self, sregs: uapi.kvm_sregs) -> None:
        uc = self._engine()
        if sregs.cr0 & CR0_PE:
            uc.reg_write(x86.UC_X86_REG_GDTR, (0, sregs.gdt.base, sregs.gdt.limit, 0))
        uc.reg_write(x86.UC_X86_REG_IDTR, (0, sregs.idt.base, sregs.idt.limit, 0))
        uc.reg_write(x86.UC_X86_REG_CR4, sregs.cr4)
        uc.reg_write(x86.UC_X86_REG_CR3, sregs.cr3)
        uc.reg_write(x86.UC_X86_REG_MSR, (MSR_EFER, sregs.efer))
        uc.reg_write(x86.UC_X86_REG_CR0, sregs.cr0)
        # Unicorn loads hidden segment state from the GDT (or selector*16 in
        # real mode): the loaders put matching descriptors there.
        for name, reg in _SEGMENT_IDS.items():
            selector = getattr(sregs, name).selector
            if sregs.cr0 & CR0_PG and selector & ~3:
                self._check_descriptor_mapped(name, sregs.gdt.base + (selector & ~7), sregs.cr3)
            uc.reg_write(reg, selector)

    def _check_descriptor_mapped(self, name: str, linear: int, cr3: int) -> None:
        """Unicorn's segment load walks the page tables outside emulation, where a fault kills the
        process (SIGSEGV): refuse a descriptor they do not map before it gets there."""
        for addr in (linear, linear + 7):
            try:
                self.view.physical(addr, False)
            except VirtualAccessFault:
                raise EmuError(f"{name.upper()} cannot be loaded: its descriptor at {linear:#x} (the GDT) is not "
                               f"mapped by the page tables at CR3={cr3:#x}") from None

    def get_sregs(self) -> uapi.kvm_sregs:
        sregs = uapi.kvm_sregs()
        if self.uc is None:
            return sregs  # before the first set_sregs: nothing to report yet
        uc = self.uc
        protected = bool(uc.reg_read(x86.UC_X86_REG_CR0) & CR0_PE)
        _, gdt_base, gdt_limit, _ = uc.reg_read(x86.UC_X86_REG_GDTR)
        _, idt_base, idt_limit, _ = uc.reg_read(x86.UC_X86_REG_IDTR)
        sregs.gdt.base, sregs.gdt.limit = gdt_base, gdt_limit
        sregs.idt.base, sregs.idt.limit = idt_base, idt_limit
        for name in SEGMENT_NAMES[:6]:
            selector = uc.reg_read(_SEGMENT_IDS[name])
            seg = self._segment(selector, protected, gdt_base, gdt_limit, code=name == "cs")
            setattr(sregs, name, segment_to_kvm(seg))
        tr_sel, tr_base, tr_limit, _ = uc.reg_read(x86.UC_X86_REG_TR)
        sregs.tr = uapi.kvm_segment(base=tr_base, limit=tr_limit, selector=tr_sel, type=0xB, present=1)
        sregs.ldt = uapi.kvm_segment(type=0x2, present=1, limit=0xFFFF)
        for name in ("cr0", "cr2", "cr3", "cr4"):
            setattr(sregs, name, uc.reg_read(getattr(x86, f"UC_X86_REG_{name.upper()}")))
        sregs.efer = uc.reg_read(x86.UC_X86_REG_MSR, MSR_EFER)
        return sregs

    def _segment(self, selector: int, protected: bool, gdt_base: int, gdt_limit: int, code: bool) -> Segment:
        if not protected:
            return Segment.real_mode(selector, code=code)
        if selector & ~3 == 0 or (selector & ~7) + 7 > gdt_limit:
            return Segment(selector=selector, base=0, limit=0, type=0, present=False, unusable=True)
        try:
            raw = GuestView(self._engine()).read(gdt_base + (selector & ~7), 8)
        except VirtualAccessFault:
            return Segment(selector=selector, base=0, limit=0, type=0, present=False, unusable=True)
        return Segment.from_descriptor(selector, decode_descriptor(raw))

    def get_regs(self) -> uapi.kvm_regs:
        if self.regs is None:
            return self._pending_regs or uapi.kvm_regs()
        return self.regs.to_kvm()

    def set_regs(self, regs: uapi.kvm_regs) -> None:
        if self.regs is None:
            self._pending_regs = regs  # applied once set_sregs has chosen the engine's mode
            return
        self.regs.from_kvm(regs)

    def exit_regs(self) -> RegisterFile:
        """Live registers by kvm_regs name (regs.rbx), read only when asked."""
        assert self.regs is not None
        return self.regs

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        uc = self._engine()
        return {index: uc.reg_read(x86.UC_X86_REG_MSR, index) for index in indices}

    def set_msrs(self, values: dict[int, int]) -> None:
        uc = self._engine()
        for index, value in values.items():
            uc.reg_write(x86.UC_X86_REG_MSR, (index, value))

    def get_mp_state(self) -> int:
        return uapi.KVM_MP_STATE_RUNNABLE

    # --- interrupts ---------------------------------------------------------------

    def attach_interrupts(self, controller: InterruptController, timer: Timer) -> None:
        self.interrupts = controller
        self.timer = timer

    def interrupt_raised(self) -> None:
        """The interrupt controller's output may have risen (any thread): end the slice."""
        self._wake.set()
        if self.uc is None:
            return
        if threading.get_ident() == self._runner:
            # A device inside the slice (an OUT hook): the stop takes at once. Only this thread may
            # stop it so: from elsewhere a stop can land as emu_start finishes and cut the next
            # slice short at an arbitrary instruction.
            self.uc.emu_stop()
            self.slicer.stopped_inside()
        else:
            self.slicer.stop_now()  # the slicer repeats it until the slice has ended

    # --- running ----------------------------------------------------------------------

    def request_exit(self) -> None:
        self._stop_requested = True
        self.interrupt_raised()

    def complete_io_in(self, exit: IoExit, data: bytes) -> None:
        self._in_data = data

    def complete_mmio_read(self, data: bytes) -> None:
        self._mmio_data = data

    def drain_coalesced(self) -> list[tuple[int, bool, bytes]]:
        return []

    def run(self) -> Exit:
        uc, regs = self._engine(), self.regs
        assert regs is not None
        self._runner = threading.get_ident()
        self._debug_stopping = False
        while True:
            if self._stop_requested:
                return InterruptedExit()
            if self._result is not None:
                result, self._result = self._result, None
                return result
            self._service_timer()
            if self._deliver_pending_interrupt():
                self._skip_at = None  # the first instruction now is the handler's
                continue
            self._wake.clear()
            # A slice ends at the timer's next deadline, soon when an IRQ waits for IF=1, and
            # otherwise only when asked (a stop, an IRQ): every stop makes a HLT just before it
            # ambiguous (see below), so there are no stops without a reason.
            deadline = self.timer.next_deadline() if self.timer is not None else None
            if self._interrupt_ready():
                soon = time.monotonic() + _MASKED_IRQ_SLICE
                deadline = soon if deadline is None else min(deadline, soon)
            if deadline is not None:
                deadline = max(deadline, time.monotonic() + _SHORTEST_SLICE)
            # Unicorn never clears RF after an IRET (a real CPU does, after one instruction);
            # a slice boundary is the closest point to do it.
            regs.flags &= ~RFLAGS_RF
            self.slicer.begin(deadline)
            if self._stop_requested or self._wake.is_set():  # asked for before the slicer could see it
                self.slicer.end(0.0)
                continue
            self.starts += 1
            failure = None
            try:
                uc.emu_start(self._begin_address(), _UNREACHABLE)
            except UcError as err:
                failure = err
            finally:
                stopped = self.slicer.end(time.monotonic())
            if self._frozen is not None:  # stopped at an I/O instruction: what ran after it never happened
                regs.from_kvm(self._frozen)
                self._frozen = None
                continue  # the stop is requested: the top of the loop returns
            if failure is not None:
                return self._engine_error(failure)
            if self._result is not None or self._stop_requested or self._restart:
                self._restart = False
                continue
            if stopped or not self._just_halted():
                # Stopped: a deadline, an IRQ or a stop request; the top of the loop services it. A
                # stop lands at a block boundary, where the byte before EIP can be 0xF4 without
                # being a HLT (seen: a JMP's displacement), so a stopped slice is never taken for a
                # HLT. If a HLT did come just before the stop, going on is what an interrupt does.
                continue
            # Unicorn returned by itself: after HLT, with EIP past it.
            if not regs.flags & RFLAGS_IF or self.interrupts is None:  # nothing can ever wake it
                return HltExit()
            self._sleep_until_interrupt()

    def _just_halted(self) -> bool:
        """Is the byte before EIP a HLT (Unicorn moves EIP past the HLT it stops on)?"""
        regs = self.regs
        assert regs is not None
        try:
            return self.view.read(self.deliverer._code_linear(regs.ip - 1), 1) == b"\xf4"
        except (VirtualAccessFault, DeliveryFault, UnsupportedDelivery, UcError, ValueError, OverflowError):
            return False

    def _begin_address(self) -> int:
        """emu_start's begin: a 16-bit engine subtracts CS*16 from it, whatever the CPU mode."""
        ip = self.regs.ip  # type: ignore[union-attr]
        if self.mode == UC_MODE_16:
            return ip + (self._engine().reg_read(x86.UC_X86_REG_CS) << 4)
        return ip

    def _sleep_until_interrupt(self) -> None:
        """HLT with IF=1: nothing runs until a timer deadline, an IRQ or a stop request."""
        while not self._stop_requested:
            if self._interrupt_ready():
                return
            deadline = self.timer.next_deadline() if self.timer is not None else None
            wait = _SLICE_SECONDS if deadline is None else max(0.0, min(deadline - time.monotonic(), _SLICE_SECONDS))
            self._wake.wait(wait)
            self._wake.clear()
            self._service_timer()

    def _service_timer(self) -> None:
        if self.timer is not None:
            self.timer.advance(time.monotonic())

    def _interrupt_ready(self) -> bool:
        return self.interrupts is not None and self.interrupts.pending_vector() is not None

    def _deliver_pending_interrupt(self) -> bool:
        if self.interrupts is None or self.regs is None or not self.regs.flags & RFLAGS_IF:
            return False
        if self.interrupts.pending_vector() is None:
            return False
        vector = self.interrupts.acknowledge()
        self._deliver(Event(vector, external=True))
        return True

    # --- hooks (run inside emu_start) ------------------------------------------------------

    def _create(self, mode: int) -> None:
        uc = Uc(UC_ARCH_X86, mode)
        # Run until stopped, never to an `until` address: Unicorn translates `until` through the
        # page tables at every stop, which sets CR2 and a stale old_exception when it is unmapped.
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])
        self.mode = mode
        for guest_addr, size, host_addr in self.vm.regions:
            uc.mem_map_ptr(guest_addr, size, UC_PROT_ALL, host_addr)
        self._map_mmio_holes(uc, mode)
        uc.hook_add(UC_HOOK_INSN, self._on_in, None, 1, 0, x86.UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, self._on_out, None, 1, 0, x86.UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        uc.hook_add(UC_HOOK_INSN, self._on_syscall, None, 1, 0, x86.UC_X86_INS_SYSCALL)  # else a no-op
        uc.hook_add(UC_HOOK_INSN, self._on_sysenter, None, 1, 0, x86.UC_X86_INS_SYSENTER)  # likewise
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid)
        self.uc = uc
        self.slicer = Slicer(uc)
        self.regs = RegisterFile(uc, mode)
        self.view = GuestView(uc)
        self.deliverer = Deliverer(uc, self.regs, self.view)
        self.chain = self.deliverer.chain

    def _map_mmio_holes(self, uc: Uc, mode: int) -> None:
        """Physical addresses without RAM become MMIO to nowhere (reads all-ones), as on KVM."""
        top = 1 << 32 if mode != UC_MODE_16 else 1 << 21
        start = 0
        for guest_addr, size, _ in sorted(self.vm.regions):
            if guest_addr > start:
                uc.mmio_map(start, guest_addr - start, self._mmio_read, None, self._mmio_write, None)
            start = guest_addr + size
        if start < top:
            uc.mmio_map(start, top - start, self._mmio_read, None, self._mmio_write, None)

    def _exit(self, exit: IoExit) -> None:
        assert self.inline_exit is not None, "the run loop installs inline_exit before running"
        if self.inline_exit(exit):
            self._freeze(exit)
            self._engine().emu_stop()
        elif self._stop_requested:
            self._engine().emu_stop()
        elif self.timer is not None:  # the guest may have just programmed the timer: its deadline ends the slice
            deadline = self.timer.next_deadline()
            if deadline is not None:
                self.slicer.end_by(deadline)

    def _freeze(self, exit: IoExit) -> None:
        """The guest stopped at this I/O instruction: keep its registers as KVM leaves them (RIP past
        an OUT, which completed; at an IN, which did not) for when the rest of the block has run."""
        regs = self.regs
        assert regs is not None
        self._frozen = regs.to_kvm()
        if exit.is_write:
            self._frozen.rip = self._after_instruction(self._frozen.rip)

    def _after_instruction(self, ip: int) -> int:
        try:
            code = self.view.read(self.deliverer._code_linear(ip), 15)
            bits = self._code_bits()
        except (VirtualAccessFault, DeliveryFault, UnsupportedDelivery, UcError, ValueError, OverflowError):
            return ip
        return next((ip + insn.size for insn in decoder(bits).disasm(code, ip, 1)), ip)

    def _code_bits(self) -> int:
        """16, 32 or 64: how the code at CS decodes. Only CS's descriptor is read (get_sregs reads all
        six, which cost SYSCALL more than half its time)."""
        uc, regs = self._engine(), self.regs
        assert regs is not None
        if not uc.reg_read(x86.UC_X86_REG_CR0) & CR0_PE:
            return 16
        _, gdt_base, gdt_limit, _ = uc.reg_read(x86.UC_X86_REG_GDTR)
        cs = self._segment(uc.reg_read(x86.UC_X86_REG_CS), True, gdt_base, gdt_limit, code=True)
        return 64 if cs.l and regs.long_mode_active() else 32 if cs.db else 16

    def _on_out(self, uc: Uc, port: int, size: int, value: int, _: object) -> None:
        if self._frozen is not None:
            return
        self.io_rip = self.regs.ip  # type: ignore[union-attr]  # Unicorn calls I/O hooks at the instruction
        self._exit(IoExit(port, size, 1, True, value.to_bytes(size, "little")))

    def _on_in(self, uc: Uc, port: int, size: int, _: object) -> int:
        if self._frozen is not None:
            return 0
        self.io_rip = self.regs.ip  # type: ignore[union-attr]
        self._in_data = b""
        self._exit(IoExit(port, size, 1, False))
        return int.from_bytes(self._in_data[:size], "little")

    def _mmio_read(self, uc: Uc, offset: int, size: int, _: object) -> int:
        self.unclaimed_mmio += 1
        self._mmio_data = b"\xff" * size
        return int.from_bytes(self._mmio_data[:size], "little")

    def _mmio_write(self, uc: Uc, offset: int, size: int, value: int, _: object) -> None:
        self.unclaimed_mmio += 1

    def _on_interrupt(self, uc: Uc, vector: int, _: object) -> None:
        if self._frozen is not None:
            return  # after the stop: it never happened
        # INT3, INTO and INT n (n >= 32) are software interrupts (gate DPL is
        # checked); below 32 Unicorn reports CPU exceptions. An explicit
        # `int $13` is indistinguishable here and is treated as the exception.
        if vector in (3, 4) or vector >= 32:
            event = Event(vector, software=True)
            if self._irq_before_software_interrupt(vector):
                return
        else:
            event = Event(vector, self._error_code(vector))
        self._deliver(event)

    def _irq_before_software_interrupt(self, vector: int) -> bool:
        """A pending IRQ with IF=1 is taken at the boundary before the INT, as the CPU would.

        Without this a guest that makes system calls often never shows the run loop an IF=1
        boundary (each INT restarts emulation inside its handler, where IF=0), and its timer
        and keyboard interrupts starve. The INT is rewound and runs again after the IRQ."""
        regs = self.regs
        if regs is None or not regs.flags & RFLAGS_IF or not self._interrupt_ready():
            return False
        regs.ip -= self.deliverer._software_interrupt_length(vector)
        assert self.interrupts is not None
        self._deliver(Event(self.interrupts.acknowledge(), external=True))
        return True

    def _on_syscall(self, uc: Uc, _: object) -> None:
        self._fast_system_call("SYSCALL", self.deliverer.syscall, Event(6))

    def _on_sysenter(self, uc: Uc, _: object) -> None:
        self._fast_system_call("SYSENTER", self.deliverer.sysenter, Event(13, 0))

    def _fast_system_call(self, name: str, enter: Callable[[int], bool], fault: Event) -> None:
        """SYSCALL or SYSENTER: Unicorn only calls this hook (without one, the instruction does nothing),
        then adds the instruction's length to RIP."""
        if self._frozen is not None:
            return
        regs = self.regs
        assert regs is not None
        length = self._after_instruction(regs.ip) - regs.ip
        try:
            if enter(length):
                # A fresh emu_start at the target, as after any PC write in a hook (see _deliver).
                self._restart = True
                self._engine().emu_stop()
            else:
                self._deliver(fault)  # the frame points at the instruction itself
        except (DeliveryFault, UnsupportedDelivery, VirtualAccessFault) as err:
            self._result = AcceleratorErrorExit(f"the software CPU could not perform {name}: {err}")
            self._engine().emu_stop()
        regs.ip -= length  # what Unicorn adds after this hook

    def _on_invalid(self, uc: Uc, _: object) -> bool:
        if self._frozen is not None:
            return False  # after the stop: Unicorn ends the slice with an error, which run() ignores
        self._deliver(Event(6))
        return True

    def _deliver(self, event: Event) -> None:
        self.last_event = event
        try:
            delivered = self.deliverer.deliver(event)
        except UnsupportedDelivery as err:
            self._result = AcceleratorErrorExit(f"the software CPU does not model {err}")
            self._engine().emu_stop()
            return
        if not delivered:
            self._result = ShutdownExit()
            self._engine().emu_stop()
            return
        # Go on from the handler in a fresh emu_start: after a PC write inside a hook, Unicorn
        # 2.1.4 no longer syncs the PC in the next block (an I/O hook there sees the block's start,
        # and a fault there would push a wrong EIP).
        self._restart = True
        self._engine().emu_stop()

    def _error_code(self, vector: int) -> int | None:
        if vector == 14:
            return self._page_fault_code()
        if vector == 13:
            return self._segment_load_selector()
        if vector in (8, 10, 11, 12, 17, 21):
            return 0  # Unicorn does not report it; 0 is right for most causes
        return None

    def _segment_load_selector(self) -> int:
        """#GP's error code: the selector for a segment-register load (the CPU pushes it), else 0."""
        from capstone import CS_OP_REG

        regs, uc = self.regs, self._engine()
        assert regs is not None
        try:
            code = self.view.read(self.deliverer._code_linear(regs.ip), 15)
        except (VirtualAccessFault, DeliveryFault, UnsupportedDelivery, UcError, ValueError, OverflowError):
            return 0  # the code is not readable through CS (a broken GDT, say): no selector to report
        bits = {UC_MODE_64: 64, UC_MODE_32: 32, UC_MODE_16: 16}[self.mode]
        for insn in decoder(bits, detail=True).disasm(code, regs.ip, 1):
            operands = insn.operands
            if insn.mnemonic != "mov" or len(operands) != 2 or operands[1].type != CS_OP_REG:
                return 0
            target, source = insn.reg_name(operands[0].reg), insn.reg_name(operands[1].reg)
            if target not in ("ds", "es", "fs", "gs", "ss"):
                return 0
            register = getattr(x86, f"UC_X86_REG_{source.upper()}", None)
            return uc.reg_read(register) & 0xFFFC if register is not None else 0
        return 0

    def _page_fault_code(self) -> int:
        """The #PF error code (SDM 4.7) for the fault Unicorn reported: the access is decoded from
        the instruction, the code comes from minikvm's walk of the guest's tables."""
        uc, regs = self._engine(), self.regs
        assert regs is not None
        cr2, ip = uc.reg_read(x86.UC_X86_REG_CR2), regs.ip
        fetch = 0 <= cr2 - ip < 16 and not self._translates(cr2, UC_PROT_EXEC)
        op = Op.EXECUTE if fetch else Op.WRITE if self._instruction_writes_memory(ip) else Op.READ
        return self.deliverer.page_fault_code(cr2, op)

    def _translates(self, addr: int, prot: int) -> bool:
        try:
            self.view.physical(addr, False, prot)
        except VirtualAccessFault:
            return False
        return True

    def _instruction_writes_memory(self, ip: int) -> bool:
        from capstone import CS_AC_WRITE, CS_OP_MEM

        try:
            code = self.view.read(ip, 15)
        except VirtualAccessFault:
            return False
        bits = 64 if self.regs.wide else 32  # type: ignore[union-attr]
        for insn in decoder(bits, detail=True).disasm(code, ip, 1):
            if insn.mnemonic.startswith(("push", "call", "enter", "stos", "movs")):
                return True
            return any(op.type == CS_OP_MEM and op.access & CS_AC_WRITE for op in insn.operands)
        return False

    def _engine_error(self, err: UcError) -> Exit:
        assert self.regs is not None
        return AcceleratorErrorExit(f"the software CPU stopped: {err} at {self.regs.ip:#x}")

    def _engine(self) -> Uc:
        if self.uc is None:
            raise EmuError("the software CPU has no state yet (set_sregs first)")
        return self.uc

    # --- debugging -----------------------------------------------------------------------

    def cancel_exit_request(self) -> None:
        """Undo request_exit, so a vCPU a debugger paused goes on running."""
        self._stop_requested = False

    def set_debug(self, step: bool = False, breakpoints: Collection[int] = (),
                  watchpoints: Sequence[tuple[int, int, str, object]] = (),
                  on_instruction: Callable[[int, int], None] | None = None, skip_at: int | None = None) -> None:
        """What stops the next run() with a DebugExit, and what it reports as it goes.

        `step`: stop before the second instruction executed (exception 1).
        `breakpoints`: linear addresses; stop before executing one (exception 3), except
        `skip_at` the first time (resuming from a breakpoint). `watchpoints`:
        (guest-physical address, length, "watch"|"rwatch"|"awatch", tag) — Unicorn's memory
        hooks see physical addresses; stop after the accessing instruction (exception 1,
        `debug_hit` = (tag, kind)). `on_instruction(linear address, size)` is called before
        each instruction (the trace). Breakpoints alone cost one hook per address; the
        others put a hook on every instruction, until the next set_debug without them.
        """
        uc = self._engine()
        self._step, self._stepped = step, False
        self._on_instruction = on_instruction
        self._skip_at = skip_at
        self._watch_hit = None
        self._breakpoints = frozenset(breakpoints)
        every_instruction = step or on_instruction is not None or bool(watchpoints)
        wanted = set() if every_instruction else set(self._breakpoints)  # else the per-instruction hook checks
        changed = False
        for addr in set(self._breakpoint_hooks) - wanted:
            uc.hook_del(self._breakpoint_hooks.pop(addr))
            changed = True
        for addr in wanted - set(self._breakpoint_hooks):
            self._breakpoint_hooks[addr] = uc.hook_add(UC_HOOK_CODE, self._on_breakpoint, None, addr, addr)
            changed = True
        if every_instruction != (self._code_hook is not None):
            if self._code_hook is None:
                self._code_hook = uc.hook_add(UC_HOOK_CODE, self._on_code_debug)
            else:
                uc.hook_del(self._code_hook)
                self._code_hook = None
            changed = True
        if list(watchpoints) != self._watches:
            for hook in self._watch_hooks:
                uc.hook_del(hook)
            self._watch_hooks = [uc.hook_add(_WATCH_HOOKS[kind], self._on_watch, (tag, kind), phys, phys + length - 1)
                                 for phys, length, kind, tag in watchpoints]
            self._watches = list(watchpoints)
            changed = True
        if changed:
            uc.ctl_flush_tb()  # blocks translated before a hook was added would not call it

    def invalidate_code(self) -> None:
        """Guest memory changed behind Unicorn's back (a debugger wrote it): drop translated code."""
        if self.uc is not None:
            self.uc.ctl_flush_tb()

    @property
    def debug_register_names(self) -> tuple[str, ...]:
        return _DEBUG_REGISTERS_WIDE if self.mode == UC_MODE_64 else _DEBUG_REGISTERS

    def debug_registers(self) -> tuple[int, ...]:
        """The registers named by `debug_register_names`, in one call (the trace samples them per instruction)."""
        ids = self.__dict__.get("_debug_ids")
        if ids is None:
            regs = self.regs
            assert regs is not None
            ids = self._debug_ids = [regs.ids[n] if n in regs.ids else getattr(x86, f"UC_X86_REG_{n.upper()}")
                                     for n in self.debug_register_names]
        return tuple(self._engine().reg_read_batch(ids))

    def _debug_stop(self, exit: DebugExit, hit: tuple[object, str] | None) -> None:
        self._result = exit
        self.debug_hit = hit
        self._watch_hit = None
        self._debug_stopping = True
        self._engine().emu_stop()  # from a code hook: the instruction does not execute

    def _on_breakpoint(self, uc: Uc, address: int, size: int, _: object) -> None:
        if self._debug_stopping:
            return
        if address == self._skip_at:
            self._skip_at = None
            return
        self._debug_stop(DebugExit(3, address, 0, 0), None)

    def _on_code_debug(self, uc: Uc, address: int, size: int, _: object) -> None:
        if self._debug_stopping:
            return
        if self._watch_hit is not None:  # the previous instruction touched a watched range
            self._debug_stop(DebugExit(1, address, 0, 0), self._watch_hit)
            return
        if self._step:
            if self._stepped:
                self._debug_stop(DebugExit(1, address, 0, 0), None)
                return
            self._stepped = True
        skip, self._skip_at = self._skip_at, None
        if address in self._breakpoints and address != skip:
            self._debug_stop(DebugExit(3, address, 0, 0), None)
            return
        if self._on_instruction is not None:
            self._on_instruction(address, size)

    def _on_watch(self, uc: Uc, access: int, address: int, size: int, value: int, hit: tuple[object, str]) -> None:
        # Unicorn calls this before the access; stopping here would leave EIP unsynced.
        # The per-instruction hook stops before the next instruction instead.
        if self._watch_hit is None:
            self._watch_hit = hit

    def close(self) -> None:
        if self.uc is not None:
            self.slicer.close()
            _release(self.uc)
        self.uc = None
        self.regs = None
        # They hold the closed engine: a use after close is an AttributeError, not a read of freed memory.
        self.__dict__.pop("view", None)
        self.__dict__.pop("deliverer", None)


def _release(uc: Uc) -> None:
    """Close the engine now rather than at some later garbage collection.

    The binding's hook closures refer back to their Uc, so only the cycle collector frees one, and
    until then its native memory (translation buffers, TLBs) stays; released that late it also
    fragments the heap: RSS crept 2-6 KB per machine over 1,000 machines, and stays flat after the
    first hundred when each is closed here. The binding closes through a weakref.finalize, which
    runs at most once, so calling it now is safe and the collector has nothing left to do."""
    finalizer = getattr(uc, "_Uc__finalizer", None)  # unicorn 2.1.x; pinned in pyproject.toml
    if finalizer is not None:
        finalizer()

