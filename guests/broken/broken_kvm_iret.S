// broken_kvm_iret - a protected-mode IRET at CPL0.
//
// Mode: 32-bit protected mode, paging off.  Nothing is wrong with this
// guest: it IRETs to the next instruction (as an interrupt handler returns)
// and exits.  Some hosts' KVM (kvm-pvm) emulate all CPL0 code and their
// emulator has no protected-mode IRET: there KVM stops with
// KVM_EXIT_INTERNAL_ERROR at bad_iret, and the explainer must name the
// instruction and send the user to the software CPU.
// Output: "kvm_iret: before" and, where IRET works, "kvm_iret: after".

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "kvm_iret: before"
    pushf
    push    %cs
    push    $after
    .globl  bad_iret
bad_iret:
    iret
after:
    SAY     "kvm_iret: after"
    EXIT

    .bss
    .balign 16
    .skip   4096
stack_top:

    BROKEN_LIB
