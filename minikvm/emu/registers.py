"""Unicorn's registers seen through the kernel's kvm_regs names.

Unicorn refuses 64-bit register ids unless the engine was created in 64-bit
mode, so a 16/32-bit engine is read through the E-registers.
"""

from __future__ import annotations

import unicorn.x86_const as x86
from unicorn import UC_MODE_64, Uc

from ..arch.x86.registers import EFER_LMA, MSR_EFER
from ..kvm.uapi import kvm_regs

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
        "r15", "rip", "rflags")


def _ids(wide: bool) -> dict[str, int]:
    ids = {}
    for name in GPRS:
        if wide:
            ids[name] = getattr(x86, f"UC_X86_REG_{name.upper()}")
        elif not name[1].isdigit():  # r8-r15 do not exist outside 64-bit mode
            ids[name] = getattr(x86, f"UC_X86_REG_E{name[1:].upper()}")
    return ids


class RegisterFile:
    """Named access to the live registers of one engine."""

    def __init__(self, uc: Uc, mode: int) -> None:
        self.uc = uc
        self.wide = mode == UC_MODE_64
        self.ids = _ids(self.wide)
        self._ip = self.ids["rip"]
        self._sp = self.ids["rsp"]
        self._flags = self.ids["rflags"]

    def __getattr__(self, name: str) -> int:
        # kvm_regs-style reads (regs.rbx) for code that only needs one register.
        ids = self.__dict__.get("ids", {})
        if name in ids:
            return self.uc.reg_read(ids[name])
        if name in GPRS:
            return 0  # r8-r15 of a 32-bit engine
        raise AttributeError(name)

    @property
    def ip(self) -> int:
        return self.uc.reg_read(self._ip)

    @ip.setter
    def ip(self, value: int) -> None:
        self.uc.reg_write(self._ip, value)

    @property
    def sp(self) -> int:
        return self.uc.reg_read(self._sp)

    @sp.setter
    def sp(self, value: int) -> None:
        self.uc.reg_write(self._sp, value)

    @property
    def flags(self) -> int:
        return self.uc.reg_read(self._flags)

    @flags.setter
    def flags(self, value: int) -> None:
        self.uc.reg_write(self._flags, value)

    @property
    def cpl(self) -> int:
        if not self.uc.reg_read(x86.UC_X86_REG_CR0) & 1:
            return 0
        return self.uc.reg_read(x86.UC_X86_REG_CS) & 3

    def long_mode_active(self) -> bool:
        return bool(self.efer() & EFER_LMA)

    def efer(self) -> int:
        return self.uc.reg_read(x86.UC_X86_REG_MSR, MSR_EFER)

    def to_kvm(self) -> kvm_regs:
        regs = kvm_regs()
        for name, reg in self.ids.items():
            setattr(regs, name, self.uc.reg_read(reg))
        return regs

    def from_kvm(self, regs: kvm_regs) -> None:
        for name, reg in self.ids.items():
            self.uc.reg_write(reg, getattr(regs, name))
