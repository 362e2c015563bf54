// broken_pse_off - a page directory of 4 MiB pages, but CR4.PSE = 0.
//
// Mode: the --paging layout (4 KiB pages, so CR4.PSE = 0).  The guest
// builds its own page directory that maps physical 0-4 MiB at 0 and at
// 0x80000000 with two 4 MiB pages (PDE = P|RW|PS), and loads CR3 without
// setting CR4.PSE.  The CPU ignores PS and reads each PDE as a pointer to
// a page table at physical 0, whose "PTEs" are zero, so the very next
// instruction fetch faults:
//   #PF(0x0) CR2 = bad_fetch (the instruction after the MOV to CR3)
//   delivering it reads the IDT at 0x528, unmapped too -> #PF: #DF
//   delivering #DF faults the same way                -> triple fault
// Output: the line below, then the VMM reports a triple fault at bad_fetch.
// The explainer must say PS=1 with CR4.PSE=0.

#define BROKEN_32
#include "broken.h"

#define HIGH_ALIAS  0x80000000

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "pse_off: 4 MiB PDEs with CR4.PSE=0"
    movl    $(0 | PTE_P | PTE_RW | PDE_PS), big_pd                // 0 -> 0
    movl    $(0 | PTE_P | PTE_RW | PDE_PS), big_pd + 512 * 4      // 0x80000000 -> 0
    mov     $(big_pd - HIGH_ALIAS), %eax                          // its physical address
    mov     %eax, %cr3
    .globl  bad_fetch
bad_fetch:
    nop
    SAY     "survived"
    EXIT

    .bss
    .balign 4096
    .globl  big_pd
big_pd:
    .skip   4096
    .skip   4096
stack_top:

    BROKEN_LIB
