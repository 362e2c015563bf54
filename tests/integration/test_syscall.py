"""SYSCALL (64-bit mode) and SYSENTER (32-bit protected mode) on both accelerators: Unicorn leaves both to
a hook, which the software CPU must fill with the SDM's semantics (they were silent no-ops there), and the
fault where they are undefined."""

from __future__ import annotations

from pathlib import Path

import pytest

from minikvm.arch.x86.state import Mode
from minikvm.debug.explain import explain
from minikvm.debug.symbols import SymbolTable
from minikvm.stop import StopKind

from .harness import ACCELERATORS, assemble, kvm_limitation, run_one, run_specs_inspected, spec_for, symbol_address

PUTCHAR_AND_EXIT = """
    putc:                           # BL to the console
        mov $0x500, %dx
        mov $1, %al
        out %al, %dx
        ret
    exit:
        mov $0x500, %dx
        xor %al, %al
        out %al, %dx
"""


def long_guest(tmp_path: Path, body: str) -> bytes:
    return assemble(tmp_path, ".code64\n" + body + PUTCHAR_AND_EXIT, 64, load=0x1000)


def protected_guest(tmp_path: Path, body: str) -> bytes:
    return assemble(tmp_path, ".code32\n" + body + PUTCHAR_AND_EXIT, 32, load=0x1000)


def triple_fault_at_here(tmp_path: Path, guest: bytes, mode: Mode, accel: str) -> tuple[int, str]:
    """Run a guest that must triple-fault before printing anything: the address of its label `here`, and
    the explainer's headline (on KVM it comes from the replay on the software CPU)."""
    symbols = SymbolTable.from_elf(tmp_path / "guest.elf")
    [(outcome, lines)] = run_specs_inspected([spec_for("faulty", guest, mode)],
                                             lambda m, r: explain(m, r, lambda: symbols), accel=accel, timeout=10)
    assert outcome.output == b"" and outcome.result.stop.kind is StopKind.TRIPLE_FAULT, outcome.explain()
    return symbol_address(tmp_path / "guest.elf", "here"), lines[0]


def allowed(accel: str, mode: Mode = Mode.LONG) -> None:
    if accel == "kvm":
        limitation = kvm_limitation(mode)
        if limitation is not None:
            pytest.skip(limitation)  # the software CPU case runs everywhere


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_syscall_enters_lstar_with_rcx_r11_and_the_flag_mask(tmp_path: Path, accel: str) -> None:
    allowed(accel)
    guest = long_guest(tmp_path, """
        mov $0xC0000080, %ecx       # EFER.SCE
        rdmsr
        or $1, %eax
        wrmsr
        mov $0xC0000082, %ecx       # LSTAR = handler
        lea handler(%rip), %rax
        xor %edx, %edx
        wrmsr
        mov $0xC0000081, %ecx       # STAR[47:32] = 0x08: CS 0x08, SS 0x10
        xor %eax, %eax
        mov $0x08, %edx
        wrmsr
        mov $0xC0000084, %ecx       # FMASK: clear DF
        mov $0x400, %eax
        xor %edx, %edx
        wrmsr
        std
        syscall
    back:
        mov $'R', %bl
        call putc
        jmp exit
    handler:                        # 'S' when RCX, R11 and RFLAGS are as the SDM says, else 'X'
        mov $'X', %bl
        lea back(%rip), %rax
        cmp %rax, %rcx
        jne 1f
        test $0x400, %r11           # the saved flags still have DF
        jz 1f
        pushf
        pop %rax
        test $0x400, %rax           # and the handler runs without it
        jnz 1f
        mov %cs, %ax
        cmp $0x08, %ax
        jne 1f
        mov $'S', %bl
    1:  call putc
        jmp *%rcx
    """)
    outcome = run_one(spec_for("syscall", guest, Mode.LONG), accel=accel)
    assert outcome.output == b"SR" and outcome.result.stop.kind is StopKind.EXIT_HYPERCALL, outcome.explain()


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_syscall_without_efer_sce_is_an_invalid_opcode(tmp_path: Path, accel: str) -> None:
    allowed(accel)
    guest = long_guest(tmp_path, """
    here:
        syscall                     # EFER.SCE is clear: #UD, and with no IDT a triple fault
        mov $'N', %bl
        call putc
        jmp exit
    """)
    at, headline = triple_fault_at_here(tmp_path, guest, Mode.LONG, accel)
    assert headline.startswith(f"triple fault: #UD at {at:#x} (syscall)"), headline


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_sysenter_enters_ring_0_at_the_msrs_target_and_stack(tmp_path: Path, accel: str) -> None:
    allowed(accel, Mode.PROTECTED)
    guest = protected_guest(tmp_path, """
        mov $0x174, %ecx            # IA32_SYSENTER_CS = 0x08 (SS is 0x10, the descriptor after it)
        mov $0x08, %eax
        xor %edx, %edx
        wrmsr
        mov $0x175, %ecx            # IA32_SYSENTER_ESP
        mov $0x9000, %eax
        wrmsr
        mov $0x176, %ecx            # IA32_SYSENTER_EIP
        mov $handler, %eax
        wrmsr
        sti
        sysenter
        mov $'N', %bl               # not reached: SYSENTER does not return by itself
        call putc
        jmp exit
    handler:                        # 'E' when ESP, SS and IF are as the SDM says, else 'X'
        mov $'X', %bl
        cmp $0x9000, %esp
        jne 1f
        mov %ss, %ax
        cmp $0x10, %ax
        jne 1f
        pushf
        pop %eax
        test $0x200, %eax
        jnz 1f
        mov $'E', %bl
    1:  call putc
        jmp exit
    """)
    outcome = run_one(spec_for("sysenter", guest, Mode.PROTECTED), accel=accel)
    assert outcome.output == b"E" and outcome.result.stop.kind is StopKind.EXIT_HYPERCALL, outcome.explain()


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_sysenter_with_a_null_cs_msr_is_a_general_protection_fault(tmp_path: Path, accel: str) -> None:
    allowed(accel, Mode.PROTECTED)
    guest = protected_guest(tmp_path, """
    here:
        sysenter                    # IA32_SYSENTER_CS is 0: #GP(0), and with no IDT a triple fault
        mov $'N', %bl
        call putc
        jmp exit
    """)
    at, headline = triple_fault_at_here(tmp_path, guest, Mode.PROTECTED, accel)
    assert headline.startswith(f"triple fault: #GP(0x0) at {at:#x} (sysenter)"), headline
