// broken_pf_readonly - a kernel write to a read-only page with CR0.WP = 1.
//
// Mode: the --paging layout (32-bit paging, 4 KiB pages, empty IDT).  The
// guest sets CR0.WP (so ring 0 honours R/W too), clears R/W in the PTE of
// its page `page_ro`, INVLPGs it, and writes to it:
//   #PF(0x3) CR2 = page_ro: protection violation, write, supervisor
//   then #GP, #DF and a triple fault through the empty IDT.
// Output: the line below, then the VMM reports a triple fault at bad_write.
// The explainer must say it is a write to a read-only page (PTE R/W=0).

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "pf_readonly: writing a read-only page with CR0.WP=1"
    mov     %cr0, %eax
    or      $CR0_WP, %eax
    mov     %eax, %cr0
    mov     $page_ro, %eax
    PTE_OF
    andl    $~PTE_RW, (%ebx)
    invlpg  page_ro
    .globl  bad_write
bad_write:
    movl    $0x1234, page_ro
    SAY     "survived"
    EXIT

    .bss
    .balign 4096
    .globl  page_ro
page_ro:
    .skip   4096
    .skip   4096
stack_top:

    BROKEN_LIB
