// broken_privileged - HLT in ring 3.
//
// Mode: 32-bit protected mode, paging off, the ABI's GDT (which has ring-3
// code 0x18 and data 0x20) and its empty IDT.  The guest IRETs to ring 3
// and executes HLT there:
//   #GP(0): HLT is privileged (CPL 3 > 0)
//   #GP: IDT gate 13 is empty       -> #DF
//   #DF: IDT gate 8 is empty        -> triple fault
// Output: the line below, then the VMM reports a triple fault at bad_hlt.
// The explainer must say that HLT is privileged and the CPU was at CPL3.
// (The IRET at CPL0 is what some hosts' KVM cannot run: see the tests.)

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "privileged: hlt in ring 3"
    push    $SEL_UDATA
    push    $ustack_top
    push    $0x2                    // EFLAGS: IF = 0, IOPL = 0
    push    $SEL_UCODE
    push    $bad_hlt
    iret

    .globl  bad_hlt
bad_hlt:                            // ring 3 from here on
    hlt
    jmp     bad_hlt

    .bss
    .balign 16
    .skip   4096
stack_top:
    .skip   4096
ustack_top:

    BROKEN_LIB
