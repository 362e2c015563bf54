"""Interrupt and exception delivery for the software CPU.

Unicorn reports an exception (or INT n) and then carries on at whatever EIP
is current; the architectural delivery is done here, following the Intel
SDM vol. 3A §6.12 (protected mode), §6.14 (IA-32e mode) and the real-mode
IVT rules: gate checks, privilege change with the stack from the TSS, the
frame, error codes, IF/TF handling. A fault raised while delivering turns
into #DF or a triple fault by the SDM's Table 6-5, and every step is kept
in `chain` so a stop report can say what happened.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass

from unicorn import Uc, UcError
from unicorn.x86_const import (
    UC_X86_REG_CR0,
    UC_X86_REG_CR2,
    UC_X86_REG_CR3,
    UC_X86_REG_CR4,
    UC_X86_REG_CS,
    UC_X86_REG_GDTR,
    UC_X86_REG_IDTR,
    UC_X86_REG_MSR,
    UC_X86_REG_R11,
    UC_X86_REG_RCX,
    UC_X86_REG_SS,
    UC_X86_REG_TR,
)

from ..arch.x86.descriptors import Descriptor, decode_descriptor
from ..arch.x86.exceptions import VECTORS, vector_name
from ..arch.x86.registers import (
    CR0_PE,
    EFER_LMA,
    EFER_SCE,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    MSR_SYSENTER_CS,
    MSR_SYSENTER_EIP,
    MSR_SYSENTER_ESP,
    RFLAGS_AC,
    RFLAGS_IF,
    RFLAGS_NT,
    RFLAGS_RF,
    RFLAGS_TF,
    RFLAGS_VM,
)
from ..arch.x86.walk import PF_P, PF_US, PF_WR, Access, Op, translate
from .guestmem import GuestView, VirtualAccessFault
from .quirks import force_cpl0, reset_old_exception
from .registers import RegisterFile

CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
FAULT_VECTORS = frozenset({0, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19, 20, 21})  # SDM table 6-1
DOUBLE_FAULT, GENERAL_PROTECTION, PAGE_FAULT, NOT_PRESENT, INVALID_TSS, STACK_FAULT = 8, 13, 14, 11, 10, 12

GATE_TASK, GATE_INT16, GATE_TRAP16, GATE_INT32, GATE_TRAP32 = 0x5, 0x6, 0x7, 0xE, 0xF
INTERRUPT_GATES = frozenset({GATE_INT16, GATE_INT32})


@dataclass(frozen=True)
class Event:
    """Something to deliver through the IVT/IDT."""

    vector: int
    error_code: int | None = None
    software: bool = False  # INT n / INT3 / INTO: gate DPL checked, return address after the instruction
    external: bool = False  # from the interrupt controller: sets EXT in error codes

    def describe(self) -> str:
        code = f" (error code {self.error_code:#x})" if self.error_code is not None else ""
        return f"{vector_name(self.vector)}{code}"

    @property
    def fault(self) -> bool:
        """A fault-class exception: the frame's EIP is the faulting instruction and RF is pushed set."""
        return not self.software and not self.external and self.vector in FAULT_VECTORS


@dataclass(frozen=True)
class ChainLink:
    """One step of an exception chain, for the stop report."""

    event: Event
    rip: int  # where the event happened (the INT itself for a software interrupt)
    outcome: str  # "delivered to 0x08:0x80001234", or why delivery failed
    cr2: int | None = None  # the faulting address, for a #PF

    @property
    def delivered(self) -> bool:
        return self.outcome.startswith("delivered")


class DeliveryFault(Exception):
    """A fault raised while delivering an event (internal to this module)."""

    def __init__(self, vector: int, error_code: int, why: str, cr2: int | None = None) -> None:
        super().__init__(why)
        self.vector = vector
        self.error_code = error_code
        self.why = why
        self.cr2 = cr2


class UnsupportedDelivery(Exception):
    """The guest uses a delivery feature the software CPU does not model (e.g. task gates)."""


def _next_event(first: Event, fault: DeliveryFault) -> Event | None:
    """SDM Table 6-5: what a fault during the delivery of `first` becomes; None = triple fault."""
    if first.vector == DOUBLE_FAULT:
        return None
    second_is_serious = fault.vector in CONTRIBUTORY or fault.vector == PAGE_FAULT
    if (first.vector in CONTRIBUTORY and fault.vector in CONTRIBUTORY) or \
            (first.vector == PAGE_FAULT and second_is_serious):
        return Event(DOUBLE_FAULT, 0)
    return Event(fault.vector, fault.error_code, external=first.external)


class Deliverer:
    def __init__(self, uc: Uc, regs: RegisterFile, view: GuestView) -> None:
        self.uc = uc
        self.regs = regs
        self.view = view
        self.chain: list[ChainLink] = []
        self.delivered: Counter[int] = Counter()  # vector → how many times, for --stats

    def deliver(self, event: Event) -> bool:
        """Deliver `event` and anything it turns into. False means a triple fault (shutdown)."""
        current: Event | None = event
        while current is not None:
            rip = self.regs.ip
            if current.software:
                rip -= self._software_interrupt_length(current.vector)  # EIP is already past the INT
            cr2 = self.uc.reg_read(UC_X86_REG_CR2) if current.vector == PAGE_FAULT and not current.software else None
            saved = self.uc.context_save()
            try:
                target = self._deliver_once(current)
            except DeliveryFault as fault:
                self.uc.context_restore(saved)
                if fault.cr2 is not None:
                    self.uc.reg_write(UC_X86_REG_CR2, fault.cr2)
                if current.software:
                    # The fault is the INT instruction's: its frame must point at the INT, not past it.
                    self.regs.ip = rip
                self.chain.append(ChainLink(current, rip, f"could not be delivered: {fault.why}", cr2))
                nxt = _next_event(current, fault)
                if nxt is None:
                    self.chain.append(ChainLink(Event(DOUBLE_FAULT, 0), rip, "a fault while delivering #DF: "
                                                "triple fault, the CPU shuts down"))
                    return False
                current = nxt
                continue
            self.chain.append(ChainLink(current, rip, f"delivered to {target}", cr2))
            self.delivered[current.vector] += 1
            del self.chain[:-32]  # a long-running guest takes many interrupts: keep the recent ones
            reset_old_exception(self.uc)
            return True
        return True

    def _software_interrupt_length(self, vector: int) -> int:
        """1 for INT3/INTO/INT1, 2 for INT imm8 (the bytes just before EIP say which)."""
        ip = self.regs.ip
        try:
            before = self.view.read(self._code_linear(ip - 2), 2)
        except (VirtualAccessFault, DeliveryFault, UnsupportedDelivery, UcError, ValueError, OverflowError):
            return 2  # the code is not readable through CS now (a broken GDT, say): INT imm8 is the usual
        if before[0] == 0xCD and before[1] == vector:
            return 2
        return 1 if before[1] in (0xCC, 0xCE, 0xF1) else 2

    def _code_linear(self, ip: int) -> int:
        if not self.uc.reg_read(UC_X86_REG_CR0) & CR0_PE:
            return (self.uc.reg_read(UC_X86_REG_CS) << 4) + (ip & 0xFFFF)
        selector = self.uc.reg_read(UC_X86_REG_CS)
        return ip if self.regs.long_mode_active() else (self._descriptor(selector, GENERAL_PROTECTION, 0).base + ip)

    def page_fault_code(self, addr: int, op: Op) -> int:
        """The #PF error code for an access at the current CPL, from a walk of the guest's tables."""
        uc = self.uc
        try:
            walk = translate(lambda a, n: bytes(uc.mem_read(a, n)), uc.reg_read(UC_X86_REG_CR0),
                             uc.reg_read(UC_X86_REG_CR3), uc.reg_read(UC_X86_REG_CR4), self.regs.efer(), addr,
                             Access.at_cpl(op, self.regs.cpl))
        except (ValueError, UcError):  # an address the paging mode cannot hold, or tables outside RAM
            walk = None
        if walk is not None and walk.error_code is not None:
            return walk.error_code
        # The tables allow it now (a stale TLB entry faulted): a protection fault is the best guess.
        return PF_P | (PF_WR if op is Op.WRITE else 0) | (PF_US if self.regs.cpl == 3 else 0)

    # --- per mode -------------------------------------------------------------

    def _deliver_once(self, event: Event) -> str:
        if not self.uc.reg_read(UC_X86_REG_CR0) & CR0_PE:
            return self._real_mode(event)
        if self.regs.long_mode_active():
            return self._long_mode(event)
        return self._protected_mode(event)

    def _real_mode(self, event: Event) -> str:
        _, base, limit, _ = self.uc.reg_read(UC_X86_REG_IDTR)
        if event.vector * 4 + 3 > limit:
            raise DeliveryFault(GENERAL_PROTECTION, 0, f"vector {event.vector:#x} is beyond the IVT limit {limit:#x}")
        offset, segment = struct.unpack("<HH", self._read(base + event.vector * 4, 4))
        ss_base = self.uc.reg_read(UC_X86_REG_SS) << 4
        sp = self.regs.sp & 0xFFFF
        flags = self.regs.flags
        frame = struct.pack("<HHH", self.regs.ip & 0xFFFF, self.uc.reg_read(UC_X86_REG_CS), flags & 0xFFFF)
        sp = (sp - 6) & 0xFFFF
        self._write(ss_base + sp, frame)
        self.regs.sp = sp
        self.regs.flags = flags & ~(RFLAGS_IF | RFLAGS_TF | RFLAGS_AC)
        self.uc.reg_write(UC_X86_REG_CS, segment)
        self.regs.ip = offset
        return f"{segment:#06x}:{offset:#06x}"

    def _gate(self, event: Event, entry_size: int) -> tuple[int, int, int, int, int]:
        """Read and check the IDT gate: (type, dpl, selector, offset, ist)."""
        _, base, limit, _ = self.uc.reg_read(UC_X86_REG_IDTR)
        ext = int(event.external)
        idt_code = event.vector * 8 + 2 + ext
        if event.vector * entry_size + entry_size - 1 > limit:
            raise DeliveryFault(GENERAL_PROTECTION, idt_code,
                                f"vector {event.vector:#x} is beyond the IDT limit {limit:#x}")
        raw = self._read(base + event.vector * entry_size, entry_size)
        low, high = struct.unpack_from("<II", raw)
        gate_type, dpl, present = (high >> 8) & 0xF, (high >> 13) & 3, bool(high & 0x8000)
        selector = low >> 16
        offset = (low & 0xFFFF) | (high & 0xFFFF0000)
        ist = 0
        if entry_size == 16:
            offset |= struct.unpack_from("<I", raw, 8)[0] << 32
            ist = high & 7
        valid = {GATE_INT32, GATE_TRAP32} if entry_size == 16 else {GATE_TASK, GATE_INT16, GATE_TRAP16,
                                                                    GATE_INT32, GATE_TRAP32}
        if gate_type not in valid:
            raise DeliveryFault(GENERAL_PROTECTION, idt_code, f"IDT gate {event.vector:#x} is not an interrupt, "
                                "trap or task gate" + (" (an empty entry)" if not any(raw) else ""))
        if event.software and dpl < self.regs.cpl:
            raise DeliveryFault(GENERAL_PROTECTION, idt_code,
                                f"INT {event.vector:#x} from CPL{self.regs.cpl} through a DPL{dpl} gate")
        if not present:
            raise DeliveryFault(NOT_PRESENT, idt_code, f"IDT gate {event.vector:#x} is not present")
        if gate_type == GATE_TASK:
            raise UnsupportedDelivery(f"task gate for vector {event.vector:#x} (task switches are not modelled)")
        return gate_type, dpl, selector, offset, ist

    def _code_segment(self, selector: int, event: Event) -> Descriptor:
        ext = int(event.external)
        if selector & ~3 == 0:
            raise DeliveryFault(GENERAL_PROTECTION, ext, "the gate's code selector is null")
        desc = self._descriptor(selector, GENERAL_PROTECTION, ext)
        if desc.system or not desc.type & 0x8:
            raise DeliveryFault(GENERAL_PROTECTION, (selector & 0xFFFC) | ext,
                                f"selector {selector:#x} in the gate is not a code segment")
        if desc.dpl > self.regs.cpl:
            raise DeliveryFault(GENERAL_PROTECTION, (selector & 0xFFFC) | ext,
                                f"code segment {selector:#x} has DPL{desc.dpl} above CPL{self.regs.cpl}")
        if not desc.present:
            raise DeliveryFault(NOT_PRESENT, (selector & 0xFFFC) | ext, f"code segment {selector:#x} is not present")
        return desc

    def _descriptor(self, selector: int, vector: int, ext: int) -> Descriptor:
        if selector & 4:
            raise UnsupportedDelivery(f"selector {selector:#x} refers to an LDT (not modelled)")
        _, base, limit, _ = self.uc.reg_read(UC_X86_REG_GDTR)
        index = selector & ~7
        if index + 7 > limit:
            raise DeliveryFault(vector, (selector & 0xFFFC) | ext, f"selector {selector:#x} is beyond the GDT limit")
        return decode_descriptor(self._read(base + index, 8))

    def _protected_mode(self, event: Event) -> str:
        gate_type, _, selector, offset, _ = self._gate(event, 8)
        code = self._code_segment(selector, event)
        cpl = self.regs.cpl
        new_cpl = code.dpl if not code.type & 0x4 else cpl  # conforming code keeps the CPL
        size = 4 if gate_type in (GATE_INT32, GATE_TRAP32) else 2
        fmt = "<I" if size == 4 else "<H"
        flags = self.regs.flags
        pushed_flags = flags | RFLAGS_RF if event.fault else flags
        words = [pushed_flags, self.uc.reg_read(UC_X86_REG_CS), self.regs.ip]
        if new_cpl < cpl:
            old_ss, old_sp = self.uc.reg_read(UC_X86_REG_SS), self.regs.sp
            ss0, esp0 = self._tss_stack32(new_cpl, event)
            self._enter_ring(new_cpl, ss0)
            self.regs.sp = esp0
            words = [old_ss, old_sp, *words]
        if event.error_code is not None and VECTORS.get(event.vector, VECTORS[0]).error_code:
            words.append(event.error_code)
        frame = b"".join(struct.pack(fmt, w & (0xFFFFFFFF if size == 4 else 0xFFFF)) for w in reversed(words))
        sp = (self.regs.sp - len(frame)) & 0xFFFFFFFF
        self._write(self._stack_linear(sp), frame, stack=True)
        self.regs.sp = sp
        self._finish(flags, gate_type, selector, offset)
        return f"{selector:#06x}:{offset:#x}"

    def _long_mode(self, event: Event) -> str:
        gate_type, _, selector, offset, ist = self._gate(event, 16)
        code = self._code_segment(selector, event)
        if not code.flags & 0x2:
            raise DeliveryFault(GENERAL_PROTECTION, selector & 0xFFFC, f"selector {selector:#x} is not 64-bit code")
        cpl = self.regs.cpl
        new_cpl = code.dpl if not code.type & 0x4 else cpl
        flags = self.regs.flags
        old_ss, old_sp = self.uc.reg_read(UC_X86_REG_SS), self.regs.sp
        pushed_flags = flags | RFLAGS_RF if event.fault else flags
        words = [old_ss, old_sp, pushed_flags, self.uc.reg_read(UC_X86_REG_CS), self.regs.ip]
        if ist or new_cpl < cpl:
            rsp = self._tss_stack64(new_cpl, ist, event)
            if new_cpl < cpl:
                self._enter_ring(new_cpl, new_cpl)  # a null SS with RPL = new CPL
            self.regs.sp = rsp
        if event.error_code is not None and VECTORS.get(event.vector, VECTORS[0]).error_code:
            words.append(event.error_code)
        frame = b"".join(struct.pack("<Q", w & 0xFFFFFFFFFFFFFFFF) for w in reversed(words))
        sp = (self.regs.sp & ~0xF) - len(frame)
        self._write(sp, frame, stack=True)
        self.regs.sp = sp
        self._finish(flags, gate_type, selector, offset)
        return f"{selector:#06x}:{offset:#x}"

    def syscall(self, length: int) -> bool:
        """SYSCALL (SDM vol. 2B), which Unicorn leaves to a hook: to ring 0 at IA32_LSTAR, RCX = the next
        RIP, R11 = RFLAGS, RFLAGS masked by IA32_FMASK, CS and SS from IA32_STAR[47:32]. False where it is
        undefined and raises #UD: EFER.SCE clear, or not in 64-bit mode (Intel's rule). `length` is the
        instruction's: RCX gets the address after it."""
        uc, regs = self.uc, self.regs
        efer = regs.efer()
        if not efer & EFER_SCE or not efer & EFER_LMA:
            return False
        if not self._descriptor(uc.reg_read(UC_X86_REG_CS), GENERAL_PROTECTION, 0).flags & 0x2:
            return False  # compatibility mode
        star, lstar, fmask = (uc.reg_read(UC_X86_REG_MSR, msr) for msr in (MSR_STAR, MSR_LSTAR, MSR_SFMASK))
        flags = regs.flags
        uc.reg_write(UC_X86_REG_RCX, regs.ip + length)
        uc.reg_write(UC_X86_REG_R11, flags)
        self._enter_ring0_at((star >> 32) & 0xFFFC, "SYSCALL", "IA32_STAR")
        regs.flags = flags & ~fmask & ~RFLAGS_RF
        regs.ip = lstar
        return True

    def sysenter(self, length: int) -> bool:
        """SYSENTER (SDM vol. 2B), which Unicorn also leaves to a hook: to ring 0 at IA32_SYSENTER_EIP with
        the stack at IA32_SYSENTER_ESP, CS from IA32_SYSENTER_CS and SS the descriptor after it; IF, VM
        and RF cleared. False where it raises #GP(0): real mode, or IA32_SYSENTER_CS null. (`length`, as
        SYSCALL takes it, is not needed: nothing records where SYSENTER came from.)"""
        uc, regs = self.uc, self.regs
        selector = uc.reg_read(UC_X86_REG_MSR, MSR_SYSENTER_CS) & 0xFFFC
        if not uc.reg_read(UC_X86_REG_CR0) & CR0_PE or not selector:
            return False
        width = 0xFFFFFFFFFFFFFFFF if regs.long_mode_active() else 0xFFFFFFFF
        esp = uc.reg_read(UC_X86_REG_MSR, MSR_SYSENTER_ESP) & width
        eip = uc.reg_read(UC_X86_REG_MSR, MSR_SYSENTER_EIP) & width
        self._enter_ring0_at(selector, "SYSENTER", "IA32_SYSENTER_CS")
        regs.flags &= ~(RFLAGS_IF | RFLAGS_VM | RFLAGS_RF)
        regs.sp = esp
        regs.ip = eip
        return True

    def _enter_ring0_at(self, selector: int, name: str, msr: str) -> None:
        """CS = `selector` and SS = the descriptor after it, at CPL0: what SYSCALL and SYSENTER load from an
        MSR. Unicorn loads them from the guest's GDT, where the CPU uses fixed flat values; a GDT that does
        not have them is reported rather than guessed at."""
        if self.regs.cpl != 0:
            force_cpl0(self.uc)
        for register, value in ((UC_X86_REG_SS, selector + 8), (UC_X86_REG_CS, selector)):
            try:
                self.uc.reg_write(register, value)
            except UcError:
                raise DeliveryFault(GENERAL_PROTECTION, 0, f"{name} cannot load selector {value:#x} ({msr}) "
                                    "from the GDT") from None

    # --- pieces ----------------------------------------------------------------

    def _finish(self, flags: int, gate_type: int, selector: int, offset: int) -> None:
        cleared = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM
        if gate_type in INTERRUPT_GATES:
            cleared |= RFLAGS_IF
        self.regs.flags = flags & ~cleared
        try:
            self.uc.reg_write(UC_X86_REG_CS, selector)
        except UcError:
            raise DeliveryFault(GENERAL_PROTECTION, selector & 0xFFFC, f"cannot load CS {selector:#x}") from None
        self.regs.ip = offset

    def _tss(self, event: Event, needed: int) -> int:
        selector, base, limit, _ = self.uc.reg_read(UC_X86_REG_TR)
        if limit < needed - 1:
            raise DeliveryFault(INVALID_TSS, (selector & 0xFFFC) | int(event.external),
                                f"the TSS (TR={selector:#x}, limit {limit:#x}) is too small or not loaded")
        return base

    def _tss_stack32(self, cpl: int, event: Event) -> tuple[int, int]:
        base = self._tss(event, 8 + 8 * cpl + 4)
        esp, ss = struct.unpack("<II", self._read(base + 4 + 8 * cpl, 8))
        ss &= 0xFFFF
        desc = self._descriptor(ss, INVALID_TSS, int(event.external))
        if ss & ~3 == 0 or desc.system or desc.type & 0x8 or not desc.type & 0x2 or desc.dpl != cpl:
            raise DeliveryFault(INVALID_TSS, (ss & 0xFFFC) | int(event.external),
                                f"SS{cpl} {ss:#x} in the TSS is not a writable ring-{cpl} data segment")
        if not desc.present:
            raise DeliveryFault(STACK_FAULT, ss & 0xFFFC, f"SS{cpl} {ss:#x} in the TSS is not present")
        return ss, esp

    def _tss_stack64(self, cpl: int, ist: int, event: Event) -> int:
        where = 0x24 + 8 * (ist - 1) if ist else 4 + 8 * cpl
        base = self._tss(event, where + 8)
        return struct.unpack("<Q", self._read(base + where, 8))[0]

    def _enter_ring(self, cpl: int, ss: int) -> None:
        """Switch Unicorn to a more privileged ring and load its SS (see quirks.force_cpl0)."""
        if cpl != 0:
            raise UnsupportedDelivery(f"a privilege change to ring {cpl} (only rings 0 and 3 are modelled)")
        force_cpl0(self.uc)
        try:
            self.uc.reg_write(UC_X86_REG_SS, ss)
        except UcError:
            raise DeliveryFault(INVALID_TSS, ss & 0xFFFC, f"cannot load SS {ss:#x} from the TSS") from None

    def _stack_linear(self, sp: int) -> int:
        # Flat stacks are the rule for protected-mode guests; a based SS is honoured too.
        selector = self.uc.reg_read(UC_X86_REG_SS)
        return (self._descriptor(selector, STACK_FAULT, 0).base + sp) & 0xFFFFFFFF if selector & ~3 else sp

    def _read(self, addr: int, length: int) -> bytes:
        """A read of a descriptor table or the TSS: an implicit supervisor access (SDM 4.6), whatever
        the CPL, so it is translated by minikvm's walker rather than Unicorn's MMU at the current CPL."""
        uc = self.uc
        data = bytearray()
        while len(data) < length:
            at = addr + len(data)
            if at >> (64 if self.regs.long_mode_active() else 32):
                raise DeliveryFault(GENERAL_PROTECTION, 0, f"{at:#x} is beyond the linear address space")
            walk = translate(lambda a, n: bytes(uc.mem_read(a, n)), uc.reg_read(UC_X86_REG_CR0),
                             uc.reg_read(UC_X86_REG_CR3), uc.reg_read(UC_X86_REG_CR4), self.regs.efer(), at,
                             Access(Op.READ))
            if walk.phys is None:
                code = walk.error_code if walk.error_code is not None else 0
                why = walk.fault.value if walk.fault is not None else "unmapped"
                raise DeliveryFault(PAGE_FAULT, code, f"reading {at:#x} faults ({why})", cr2=at)
            chunk = min(length - len(data), 0x1000 - (at & 0xFFF))
            try:
                data += uc.mem_read(walk.phys, chunk)
            except UcError:
                raise DeliveryFault(GENERAL_PROTECTION, 0, f"{at:#x} is outside guest RAM") from None
        return bytes(data)

    def _write(self, addr: int, data: bytes, stack: bool = False) -> None:
        try:
            self.view.write(addr, data)
        except VirtualAccessFault as fault:
            what = "pushing the frame onto the stack" if stack else "writing"
            raise DeliveryFault(PAGE_FAULT, self._pf_code(fault.addr, write=True),
                                f"{what} at {fault.addr:#x} faults (stack pointer in an unmapped or read-only page)",
                                cr2=fault.addr) from None

    def _pf_code(self, addr: int, write: bool) -> int:
        return self.page_fault_code(addr, Op.WRITE if write else Op.READ)
