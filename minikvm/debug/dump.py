"""Register, segment and control-register dumps, and reset-state detection."""

from __future__ import annotations

from ..arch.x86.cpustate import SEGMENT_NAMES, segment_from_kvm
from ..arch.x86.registers import (
    CR0_NAMES,
    CR4_NAMES,
    EFER_NAMES,
    RFLAGS_NAMES,
    bit_names,
)
from ..kvm.uapi import kvm_regs, kvm_sregs

_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
         "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


def register_dump(regs: kvm_regs, sregs: kvm_sregs) -> list[str]:
    long_mode = bool(sregs.cs.l)
    width = 16 if long_mode else 8
    names = _GPRS if long_mode else _GPRS[:8]
    lines = []
    for i in range(0, len(names), 4):
        lines.append("  ".join(f"{n.upper():>3}={getattr(regs, n):0{width}x}" for n in names[i:i + 4]))
    lines.append(f"RIP={regs.rip:0{width}x}  RFLAGS={regs.rflags:08x} [{bit_names(regs.rflags, RFLAGS_NAMES)}]")
    for name in SEGMENT_NAMES:
        lines.append(f"{name.upper():>3} {segment_from_kvm(getattr(sregs, name)).describe()}")
    lines.append(f"GDTR base={sregs.gdt.base:#x} limit={sregs.gdt.limit:#x}  "
                 f"IDTR base={sregs.idt.base:#x} limit={sregs.idt.limit:#x}")
    lines.append(f"CR0={sregs.cr0:08x} [{bit_names(sregs.cr0, CR0_NAMES)}]  CR2={sregs.cr2:x}  "
                 f"CR3={sregs.cr3:x}")
    lines.append(f"CR4={sregs.cr4:08x} [{bit_names(sregs.cr4, CR4_NAMES)}]  "
                 f"EFER={sregs.efer:x} [{bit_names(sregs.efer, EFER_NAMES)}]")
    return lines
