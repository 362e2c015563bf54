// broken_pf_not_present - a read from a page whose PTE is not present.
//
// Mode: the --paging layout (ABI.md: loaded at 0x1000, entered at virtual
// 0x80001000, 32-bit paging with 4 KiB pages, an empty IDT).  The guest
// clears P in the PTE of its page `page_np`, INVLPGs it and reads it:
//   #PF(0x0) CR2 = page_np: the PTE is not present (read, supervisor)
//   #PF: IDT gate 14 is empty       -> #GP: #PF then #GP make #DF
//   #DF: IDT gate 8 is empty        -> triple fault
// Output: the line below, then the VMM reports a triple fault at bad_read.
// The explainer must show the walk: PDE[0x200] present, the PTE not.

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "pf_not_present: reading a page whose PTE has P=0"
    mov     $page_np, %eax
    PTE_OF
    andl    $~PTE_P, (%ebx)
    invlpg  page_np
    .globl  bad_read
bad_read:
    mov     page_np, %edx
    SAY     "survived"
    EXIT

    .bss
    .balign 4096
    .globl  page_np
page_np:
    .skip   4096
    .skip   4096
stack_top:

    BROKEN_LIB
