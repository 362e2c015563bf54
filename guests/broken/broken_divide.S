// broken_divide - DIV by zero with no exception handler.
//
// Mode: 32-bit protected mode, paging off, the ABI's empty IDT.
//   #DE: ECX = 0                    -> IDT gate 0 is empty: #GP(0x02)
//   #GP: IDT gate 13 is empty       -> #DF
//   #DF: IDT gate 8 is empty        -> triple fault
// Output: the line below, then the VMM reports a triple fault at bad_div.
// The explainer must say that the divisor (ECX) is zero.

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "divide: 100 / 0"
    mov     $100, %eax
    xor     %edx, %edx
    xor     %ecx, %ecx              // the divisor: zero
    .globl  bad_div
bad_div:
    div     %ecx
    SAY     "survived"
    EXIT

    .bss
    .balign 16
    .skip   4096
stack_top:

    BROKEN_LIB
