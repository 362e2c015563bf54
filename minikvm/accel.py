"""Which accelerator runs a guest: KVM where the host's KVM can run its mode, the software CPU otherwise.

What a host's KVM can run is measured, not assumed: a throw-away VM per CPU
mode runs `out %al, $0x80; hlt` and must reach the OUT. kvm-pvm, for one,
accepts a 32-bit paging state and then answers KVM_RUN with SHUTDOWN.
Each mode is probed at most once per process, and only when asked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from .arch.x86.cpustate import apply_to_sregs, regs_to_kvm
from .arch.x86.paging import map_pae
from .arch.x86.registers import CR4_PAE
from .arch.x86.state import BootState, DescriptorTable, Mode, protected_mode
from .boot import layout
from .boot.flat import abi_gdt, load_flat
from .boot.paging_layout import load_paging_abi
from .errors import MinikvmError
from .kvm.exits import InternalErrorExit, IoExit, ShutdownExit
from .kvm.system import Kvm, KvmError
from .memory import GuestMemory
from .runloop import INTERNAL_ERROR_NAMES

PROBE_CODE = bytes([0xE6, 0x80, 0xF4])  # out %al, $0x80; hlt — the same bytes in 16, 32 and 64-bit code
# Interrupt handlers return with IRET; KVM's instruction emulator (used for all CPL0 code on
# hosts such as kvm-pvm) does not implement a protected-mode IRET. So: IRET to the next
# instruction, then the OUT.
#   pushf; push %cs; push $0x1008; iret          (32-bit, at 0x1000)
IRET32_CODE = bytes.fromhex("9c 0e 68 08 10 00 00 cf") + PROBE_CODE
#   mov %rsp,%rax; push $0x10; push %rax; pushfq; push $0x08; push $0x1010; iretq   (64-bit, at 0x1000)
IRET64_CODE = bytes.fromhex("48 89 e0 6a 10 50 9c 6a 08 68 10 10 00 00 48 cf") + PROBE_CODE
_PROBE_RAM = 4 * 1024 * 1024


class AcceleratorError(MinikvmError):
    """The requested accelerator cannot run this guest (the message says why, before any guest code ran)."""


@dataclass(frozen=True)
class ProbeCase:
    label: str
    build: Callable[[GuestMemory], BootState]


def _flat(mode: Mode, code: bytes = PROBE_CODE) -> Callable[[GuestMemory], BootState]:
    return lambda mem: load_flat(mem, code, mode, "<probe>")


def _paging(pages: str) -> Callable[[GuestMemory], BootState]:
    return lambda mem: load_paging_abi(mem, PROBE_CODE, "<probe>", pages=pages)


def _pae(mem: GuestMemory) -> BootState:
    gdt = abi_gdt()
    mem.write(layout.GDT_BASE, gdt)
    mem.write(layout.PM_LOAD, PROBE_CODE)
    cr3 = map_pae(mem, 0x100000, 0x101000, [(0, 0, _PROBE_RAM)], tables=[0x102000, 0x103000])
    state = protected_mode(layout.PM_LOAD, 0x8000, DescriptorTable(layout.GDT_BASE, len(gdt) - 1),
                           DescriptorTable(0, 0), cr3=cr3)
    state.cr4 |= CR4_PAE
    return state


PROBES: dict[str, ProbeCase] = {
    "real": ProbeCase("real mode", _flat(Mode.REAL)),
    "protected": ProbeCase("32-bit protected mode", _flat(Mode.PROTECTED)),
    "paging-4k": ProbeCase("32-bit paging, 4 KiB pages", _paging("4k")),
    "paging-4m": ProbeCase("32-bit paging, 4 MiB pages (PSE)", _paging("4m")),
    "pae": ProbeCase("PAE paging", _pae),
    "long": ProbeCase("64-bit long mode", _flat(Mode.LONG)),
    "protected-iret": ProbeCase("IRET at CPL0, 32-bit (interrupt handlers)", _flat(Mode.PROTECTED, IRET32_CODE)),
    "long-iret": ProbeCase("IRETQ at CPL0, 64-bit (interrupt handlers)", _flat(Mode.LONG, IRET64_CODE)),
}

MODE_PROBE = {Mode.REAL: "real", Mode.PROTECTED: "protected", Mode.PAGING: "paging-4k", Mode.LONG: "long"}
# What a guest that takes interrupts needs on top of its mode (real-mode IRET is always emulated).
INTERRUPT_PROBE = {Mode.PROTECTED: "protected-iret", Mode.PAGING: "protected-iret", Mode.LONG: "long-iret"}


@functools.cache
def kvm_unavailable() -> str | None:
    """Why this process cannot use /dev/kvm at all, or None."""
    try:
        Kvm().close()
    except MinikvmError as err:
        return str(err)
    return None


@functools.cache
def kvm_cannot_run(probe: str) -> str | None:
    """Why the host's KVM cannot run the probe's mode, or None when it can."""
    reason = kvm_unavailable()
    if reason is not None:
        return reason
    kvm = Kvm()
    memory = GuestMemory([(0, _PROBE_RAM)])
    vm = vcpu = None
    try:
        state = PROBES[probe].build(memory)
        vm = kvm.create_vm()
        vm.set_user_memory_region(0, 0, _PROBE_RAM, memory.regions[0].host_addr)
        vcpu = vm.create_vcpu(0)
        vcpu.set_cpuid2(kvm.supported_cpuid())
        vcpu.set_sregs(apply_to_sregs(state, vcpu.get_sregs()))
        vcpu.set_regs(regs_to_kvm(state))
        exit = vcpu.run()
    except KvmError as err:
        return f"{err} on a probe guest"
    finally:
        for thing in (vcpu, vm, memory, kvm):
            if thing is not None:
                thing.close()
    if isinstance(exit, IoExit) and exit.port == 0x80:
        return None
    if isinstance(exit, InternalErrorExit):
        what = INTERNAL_ERROR_NAMES.get(exit.suberror, f"internal error {exit.suberror}")
        return f"on a probe guest, {what} (KVM_EXIT_INTERNAL_ERROR)"
    if isinstance(exit, ShutdownExit):
        return "a probe guest was shut down (KVM_EXIT_SHUTDOWN), as if it had triple-faulted"
    return f"a probe guest ended with {type(exit).__name__}"


@dataclass(frozen=True)
class Choice:
    name: str  # "kvm" or "emu"
    note: str | None  # one line for stderr when auto picked the software CPU


def choose(requested: str, mode: Mode, interrupts: bool = False) -> Choice:
    """`--accel kvm|emu|auto` for a guest of `mode`; raises AcceleratorError for an impossible `kvm`."""
    if requested == "emu":
        return Choice("emu", None)
    unusable = kvm_unavailable()
    if unusable is not None:
        if requested == "kvm":
            raise AcceleratorError(f"KVM is not usable: {unusable} (--accel emu or auto runs the software CPU)")
        return Choice("emu", f"no usable KVM ({unusable}); using the software CPU")
    what, reason = mode.label, kvm_cannot_run(MODE_PROBE[mode])
    if reason is None and interrupts and mode in INTERRUPT_PROBE:
        what, reason = f"interrupt handlers in {mode.label}", kvm_cannot_run(INTERRUPT_PROBE[mode])
    if reason is None:
        return Choice("kvm", None)
    if requested == "kvm":
        raise AcceleratorError(f"this host's KVM cannot run {what}: {reason} (use --accel emu or auto)")
    return Choice("emu", f"this host's KVM cannot run {what} ({reason}); using the software CPU")


def host_report() -> list[str]:
    """`minikvm host`: what this host's KVM can run, measured now."""
    lines = []
    unavailable = kvm_unavailable()
    lines.append(f"KVM: {'unavailable: ' + unavailable if unavailable else 'available (/dev/kvm)'}")
    for key, case in PROBES.items():
        reason = kvm_cannot_run(key)
        lines.append(f"  {case.label:<44} {'runs on KVM' if reason is None else 'no: ' + reason}")
    if unavailable is None:
        from .probe import io_exit_rip_after_insn, kvm_facts

        facts = kvm_facts()
        for name, value in vars(facts).items():
            lines.append(f"  {name.replace('_', ' '):<44} {value}")
        after = io_exit_rip_after_insn()
        lines.append(f"  {'RIP at a port-I/O exit':<44} {'past the instruction' if after else 'at the instruction'}")
    import unicorn

    from .emu.quirks import context_offsets

    offsets = context_offsets()
    lines.append(f"software CPU: unicorn {unicorn.__version__}; context offsets old_exception={offsets.old_exception},"
                 f" hflags={offsets.hflags}")
    return lines


