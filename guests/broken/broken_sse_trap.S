// broken_sse_trap - entry of a C kernel that GCC auto-vectorised (ABI.md,
// "The SSE trap"): the original Mini-KVM "Protected Mode SHUTDOWN".
//
// Mode: the --paging layout (loaded at 0x1000, entered at virtual
// 0x80001000, paging on).  This entry sets up a stack and calls
// kernel_main (broken_sse_trap_kernel.c), which clears .bss with its own
// memset -- compiled by GCC with -O3 -msse2, so memset's loop uses SSE.
//
// With minikvm's default CR4 (OSFXSR|OSXMMEXCPT) the kernel prints
// "sse_trap: kernel up" and exits.  Started with --cr4 0, as the original
// VMM did, the first SSE instruction raises #UD; the ABI's IDT is empty:
//   #UD -> #GP(0x32) -> #DF -> triple fault, before any output.
// The explainer must name #UD at that instruction and CR4.OSFXSR=0.

#include "abi.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp        // the stack is in .data: memset clears .bss
    call    kernel_main
    mov     $HC_EXIT, %al
    xor     %bl, %bl
    mov     $HC_PORT, %dx
    out     %al, %dx
1:  hlt
    jmp     1b

    .data
    .balign 16
stack:
    .skip   4096
stack_top:
