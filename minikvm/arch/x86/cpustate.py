"""Conversion between minikvm's CPU state values and the kernel's kvm_regs/kvm_sregs.

kvm_regs/kvm_sregs are the common currency of both accelerators' vCPUs.
"""

from __future__ import annotations

from ...kvm.uapi import kvm_regs, kvm_segment, kvm_sregs
from .descriptors import Segment
from .state import BootState

SEGMENT_NAMES = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")


def segment_to_kvm(seg: Segment) -> kvm_segment:
    return kvm_segment(base=seg.base, limit=seg.limit, selector=seg.selector, type=seg.type,
                       present=int(seg.present), dpl=seg.dpl, db=int(seg.db), s=int(seg.s), l=int(seg.l),
                       g=int(seg.g), avl=int(seg.avl), unusable=int(seg.unusable))


def segment_from_kvm(seg: kvm_segment) -> Segment:
    return Segment(selector=seg.selector, base=seg.base, limit=seg.limit, type=seg.type, s=bool(seg.s),
                   dpl=seg.dpl, present=bool(seg.present), db=bool(seg.db), l=bool(seg.l), g=bool(seg.g),
                   avl=bool(seg.avl), unusable=bool(seg.unusable))


def regs_to_kvm(state: BootState) -> kvm_regs:
    regs = kvm_regs()
    for name, value in state.regs.items():
        setattr(regs, name, value)
    return regs


def apply_to_sregs(state: BootState, sregs: kvm_sregs) -> kvm_sregs:
    """Fill `sregs` (as read from the vCPU, so apic_base etc. keep their values) from `state`."""
    for name in SEGMENT_NAMES:
        setattr(sregs, name, segment_to_kvm(state.segments[name]))
    sregs.gdt.base, sregs.gdt.limit = state.gdt.base, state.gdt.limit
    sregs.idt.base, sregs.idt.limit = state.idt.base, state.idt.limit
    sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = state.cr0, state.cr3, state.cr4, state.efer
    return sregs


def is_reset_state(regs: kvm_regs, sregs: kvm_sregs) -> bool:
    """True when the vCPU holds the architectural reset state (SDM vol. 3A §9.1.1).

    AMD SVM hosts re-initialise the vCPU after a shutdown, so registers read
    then describe the reset vector, not the fault.
    """
    return (regs.rip == 0xFFF0 and sregs.cs.selector == 0xF000 and sregs.cs.base == 0xFFFF0000
            and not sregs.cr0 & 1)
