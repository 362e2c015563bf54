// exc_triple - UD2 with no usable IDT ends in a triple fault.
//
// Mode: 32-bit protected mode, no paging, own GDT/TSS (exc.h).
// After printing one line the guest loads an IDT with limit 0, so no gate
// can be read, and executes UD2:
//   #UD: vector 6 is beyond the IDT limit      -> #GP(6*8+2 = 0x32)
//   #GP: vector 13 is beyond the IDT limit     -> #GP + #GP: #DF (Table 6-5)
//   #DF: vector 8 is beyond the IDT limit      -> triple fault: shutdown
// Output:
//   triple: ud2 with an empty IDT
// then the VMM reports a triple fault at triple_ud2.

#define EXC_PROT
#include "exc.h"

    .code32
    .text
    .globl _start
_start:
    SETUP
    TEXT    "triple: ud2 with an empty IDT"
    NEWLINE
    lidt    no_idt
    mov     $0x1234, %eax
    .globl  triple_ud2
triple_ud2:
    ud2
    TEXT    "survived"
    NEWLINE
    EXIT

    .data
    .balign 4
    .word   0
no_idt:
    .word   0                       // limit 0: not even one gate fits
    .long   0

    EXC_LIB
