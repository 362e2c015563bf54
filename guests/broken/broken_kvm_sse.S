// broken_kvm_sse - an SSE instruction at CPL0, with SSE enabled.
//
// Mode: 32-bit protected mode, paging off, minikvm's default CR0/CR4
// (x87/SSE enabled).  Nothing is wrong with this guest: PXOR is legal.
// Hosts whose KVM emulates all CPL0 code (kvm-pvm) stop with
// KVM_EXIT_INTERNAL_ERROR at bad_pxor, and the explainer must name the
// instruction and suggest -mgeneral-regs-only or the software CPU.
// Output: "kvm_sse: before" and, where PXOR works, "kvm_sse: after".

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "kvm_sse: before"
    .globl  bad_pxor
bad_pxor:
    pxor    %xmm0, %xmm0
    SAY     "kvm_sse: after"
    EXIT

    .bss
    .balign 16
    .skip   4096
stack_top:

    BROKEN_LIB
