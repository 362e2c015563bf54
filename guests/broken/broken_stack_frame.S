// broken_stack_frame - an exception whose frame cannot be pushed.
//
// Mode: the --paging layout.  The guest installs a handler for every
// exception vector (0-31), so the IDT is fine; but it then moves ESP into an
// unmapped page (0x00600000) and executes UD2:
//   #UD: pushing its frame at 0x5ffff4 faults -> #PF(0x2)
//   #PF: pushing its frame faults too         -> #DF
//   #DF: pushing its frame faults too         -> triple fault
// Output: the line below, then the VMM reports a triple fault at bad_ud2.
// The explainer must point at the stack pointer, not at the IDT.

#define BROKEN_32
#include "broken.h"

    .globl  bad_esp                 // for the tests: an absolute symbol
    .set    bad_esp, 0x600000

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "stack_frame: every exception has a handler, but ESP = 0x600000 is not mapped"
    sidt    idtr                    // the ABI's IDT: fill gates 0-31
    mov     idtr + 2, %edi
    mov     $handler, %eax
    mov     $GATE_INT0, %edx
    xor     %ecx, %ecx
1:  call    set_gate
    inc     %ecx
    cmp     $32, %ecx
    jb      1b
    mov     $bad_esp, %esp
    .globl  bad_ud2
bad_ud2:
    ud2
    jmp     .

handler:                            // not reached: no frame can be pushed
    mov     $stack_top, %esp
    SAY     "handler"
    EXIT

    .data
    .balign 4
    .word   0
idtr:
    .word   0
    .long   0

    .bss
    .balign 16
    .skip   4096
stack_top:

    BROKEN_LIB
