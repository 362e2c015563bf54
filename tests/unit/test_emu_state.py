"""The software CPU's register surface behaves as KVM's: set_regs and set_sregs in either order."""

from __future__ import annotations

from minikvm.emu.cpu import Emu
from minikvm.kvm import uapi


def test_registers_set_before_the_mode_apply_once() -> None:
    vcpu = Emu().create_vm().create_vcpu()
    try:
        vcpu.set_regs(uapi.kvm_regs(rip=0x10, rflags=0x2))  # before set_sregs: kept until the engine exists
        vcpu.set_sregs(uapi.kvm_sregs())  # real mode
        assert vcpu.get_regs().rip == 0x10
        vcpu.set_regs(uapi.kvm_regs(rip=0x20, rflags=0x2))
        vcpu.set_sregs(vcpu.get_sregs())  # must not bring back the first registers
        assert vcpu.get_regs().rip == 0x20
    finally:
        vcpu.close()
