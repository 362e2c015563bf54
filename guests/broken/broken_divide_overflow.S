// broken_divide_overflow - DIV whose quotient does not fit: EDX not cleared.
//
// Mode: 32-bit protected mode, paging off, the ABI's empty IDT.
// DIV ECX divides EDX:EAX; the guest meant 1000 / 10 but left a value in
// EDX (as after a MUL), so the quotient is larger than 32 bits:
//   #DE: quotient too large (the divisor is 10, not zero)
//   then #GP, #DF and a triple fault through the empty IDT.
// Output: the line below, then the VMM reports a triple fault at bad_div.
// The explainer must say that the quotient overflows, not that the divisor
// is zero.

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "divide_overflow: EDX:EAX / 10 with EDX left non-zero"
    mov     $0x12345678, %edx       // left over from earlier work: the bug
    mov     $1000, %eax
    mov     $10, %ecx
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
