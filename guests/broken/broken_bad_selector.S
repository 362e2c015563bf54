// broken_bad_selector - loading DS with a selector beyond the GDT.
//
// Mode: 32-bit protected mode, paging off, the ABI's GDT (5 descriptors at
// 0x500, limit 0x27) and its empty IDT.  The guest loads DS with 0x80
// (GDT index 16, bytes 0x80-0x87, beyond the limit 0x27):
//   #GP(0x80): the selector is beyond the GDT limit
//   #GP: IDT gate 13 is empty       -> #GP during #GP: #DF
//   #DF: IDT gate 8 is empty        -> triple fault
// Output: the line below, then the VMM reports a triple fault at bad_mov_ds.
// The explainer must name the segment-register load and the GDT limit.

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "bad_selector: mov 0x80 to DS with a 5-entry GDT"
    mov     $0x80, %ax
    .globl  bad_mov_ds
bad_mov_ds:
    mov     %ax, %ds
    SAY     "survived"
    EXIT

    .bss
    .balign 16
    .skip   4096
stack_top:

    BROKEN_LIB
