// broken_stack_zero - a --paging kernel that never sets up its stack.
//
// Mode: the --paging layout, which enters with ESP = 0 (ABI.md: "all others
// 0").  The kernel's first instruction is a CALL: the push goes to
// 0xfffffffc (ESP wraps), which is not mapped.
//   #PF(0x2) CR2 = 0xfffffffc: not present, write, supervisor
//   then #GP, #DF and a triple fault through the empty IDT.
// Output: nothing; the VMM reports a triple fault at bad_call.
// The explainer must point at the stack pointer (ESP = 0: the push wrapped
// to the top of the address space).

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    .globl  bad_call
bad_call:
    call    kmain                   // the bug: no `mov $stack_top, %esp` first
    EXIT

kmain:
    SAY     "survived"
    EXIT

    BROKEN_LIB
