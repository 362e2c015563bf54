"""What this host's KVM can do, measured once per process with throw-away VMs.

Hosts differ in ways no capability flag reports (kvm-pvm cannot run 32-bit
paging; on VMX/SVM the RIP at a port-I/O exit points at the OUT, while an
emulating host has already moved past it). So minikvm asks the hardware.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .arch.x86.cpustate import apply_to_sregs, regs_to_kvm
from .arch.x86.state import real_mode
from .kvm import uapi
from .kvm.exits import IoExit
from .kvm.system import Kvm
from .memory import GuestMemory

# Real-mode probe code: out dx, al (port 0x80); hlt.
_OUT_THEN_HLT = bytes([0xBA, 0x80, 0x00, 0xEE, 0xF4])
_OUT_OFFSET = 3


@dataclass(frozen=True)
class KvmFacts:
    irqchip: bool
    pit2: bool
    coalesced_pio: bool
    sync_regs: bool
    immediate_exit: bool
    triple_fault_event: bool
    guest_debug: bool
    max_vcpus: int


@functools.cache
def kvm_facts() -> KvmFacts:
    """Probe the host KVM (raises KvmUnavailableError when there is none)."""
    kvm = Kvm()
    try:
        caps = {name: kvm.check_extension(getattr(uapi, f"KVM_CAP_{name}"))
                for name in ("IRQCHIP", "PIT2", "COALESCED_PIO", "SYNC_REGS", "IMMEDIATE_EXIT",
                             "X86_TRIPLE_FAULT_EVENT", "SET_GUEST_DEBUG", "MAX_VCPUS")}
        return KvmFacts(irqchip=bool(caps["IRQCHIP"]), pit2=bool(caps["PIT2"]),
                        coalesced_pio=bool(caps["COALESCED_PIO"]), sync_regs=bool(caps["SYNC_REGS"]),
                        immediate_exit=bool(caps["IMMEDIATE_EXIT"]),
                        triple_fault_event=bool(caps["X86_TRIPLE_FAULT_EVENT"]),
                        guest_debug=bool(caps["SET_GUEST_DEBUG"]), max_vcpus=caps["MAX_VCPUS"])
    finally:
        kvm.close()


@functools.cache
def io_exit_rip_after_insn() -> bool:
    """Has RIP moved past the OUT when KVM reports a port-I/O exit? (Only stop reports ask.)"""
    kvm = Kvm()
    memory = GuestMemory([(0, 0x1000)])
    vm = kvm.create_vm()
    vcpu = None
    try:
        memory.write(0, _OUT_THEN_HLT)
        vm.set_user_memory_region(0, 0, 0x1000, memory.regions[0].host_addr)
        vcpu = vm.create_vcpu(0)
        state = real_mode(0)
        vcpu.set_sregs(apply_to_sregs(state, vcpu.get_sregs()))
        vcpu.set_regs(regs_to_kvm(state))
        exit = vcpu.run()
        if not isinstance(exit, IoExit):
            return False
        return vcpu.get_regs().rip != _OUT_OFFSET
    finally:
        if vcpu is not None:
            vcpu.close()
        vm.close()
        memory.close()
        kvm.close()
