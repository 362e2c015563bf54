// broken_stack_unmapped - ESP in an unmapped page, then CALL.
//
// Mode: the --paging layout (virtual 0-4 MiB and 0x80000000-0x803FFFFF are
// mapped, nothing else).  The guest sets ESP to 0x800000 - "the top of
// 8 MiB" - which is not mapped, and calls a function: pushing the return
// address faults.
//   #PF(0x2) CR2 = 0x7ffffc: not present, write, supervisor
//   then #GP, #DF and a triple fault through the empty IDT.
// Output: the line below, then the VMM reports a triple fault at bad_call.
// The explainer must point at the stack pointer.

#define BROKEN_32
#include "broken.h"

    .globl  bad_esp                 // for the tests: an absolute symbol
    .set    bad_esp, 0x800000

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "stack_unmapped: ESP = 0x800000, which is not mapped"
    mov     $bad_esp, %esp
    .globl  bad_call
bad_call:
    call    kmain
    EXIT

kmain:
    SAY     "survived"
    EXIT

    .bss
    .balign 16
    .skip   4096
stack_top:

    BROKEN_LIB
