// broken_gate_not_present - IDT gates written without their P bit.
//
// Mode: 32-bit protected mode, paging off.
// The guest builds a full IDT (256 gates, each to `handler`) but writes the
// type/attribute word as 0x0E00 (32-bit interrupt gate, DPL 0) instead of
// 0x8E00: P = 0 in every gate.  Then UD2:
//   #UD: gate 6 is not present      -> #NP(6*8+2 = 0x32)
//   #NP: gate 11 is not present     -> #NP during #NP: #DF
//   #DF: gate 8 is not present      -> triple fault
// Output: the line below, then the VMM reports a triple fault at bad_ud2.
// The explainer must say that the gate is not present (P=0).

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "gate_not_present: every IDT gate has P=0"
    mov     $idt, %edi
    mov     $handler, %eax
    mov     $GATE_INT0_ABSENT, %edx // the bug: should be GATE_INT0 (0x8E00)
    xor     %ecx, %ecx
1:  call    set_gate
    inc     %ecx
    cmp     $256, %ecx
    jb      1b
    lidt    idtr
    .globl  bad_ud2
bad_ud2:
    ud2
    SAY     "survived"
    EXIT

handler:                            // not reached
    SAY     "handler"
    EXIT

    .data
    .balign 4
    .word   0
idtr:
    .word   256 * 8 - 1
    .long   idt

    .bss
    .balign 8
idt:
    .skip   256 * 8
    .balign 16
    .skip   4096
stack_top:

    BROKEN_LIB
