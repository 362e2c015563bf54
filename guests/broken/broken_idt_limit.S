// broken_idt_limit - the IDT limit counts entries instead of bytes.
//
// Mode: 32-bit protected mode, paging off (loaded and entered at 0x1000).
// The guest fills 32 good gates (vectors 0-31, each to `handler`, which
// would print "handler" and exit), but loads IDTR with limit 32 - 1 = 0x1f:
// the limit is in bytes, so only gates 0-3 are inside it.  Then UD2:
//   #UD: gate 6 (bytes 0x30-0x37) is beyond the limit 0x1f -> #GP(6*8+2 = 0x32)
//   #GP: gate 13 is beyond the limit too                    -> #DF
//   #DF: gate 8 is beyond the limit too                     -> triple fault
// Output: the line below, then the VMM reports a triple fault at bad_ud2.
// The explainer must say that the vector is beyond the IDT limit.

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "idt_limit: 32 gates, but IDTR.limit = 32 - 1"
    mov     $idt, %edi
    mov     $handler, %eax
    mov     $GATE_INT0, %edx
    xor     %ecx, %ecx
1:  call    set_gate
    inc     %ecx
    cmp     $32, %ecx
    jb      1b
    lidt    idtr
    .globl  bad_ud2
bad_ud2:
    ud2
    SAY     "survived"
    EXIT

handler:                            // not reached: every exception is beyond the limit
    SAY     "handler"
    EXIT

    .data
    .balign 4
    .word   0
idtr:
    .word   32 - 1                  // the bug: should be 32 * 8 - 1
    .long   idt

    .bss
    .balign 8
idt:
    .skip   32 * 8
    .balign 16
    .skip   4096
stack_top:

    BROKEN_LIB
