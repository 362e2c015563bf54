// broken_privileged_64 - CLI in ring 3, 64-bit.
//
// Mode: 64-bit long mode (the ABI's: ring-3 code 0x18 and data 0x20 in its
// GDT, identity-mapped user-accessible 2 MiB pages, an empty IDT).  The
// guest IRETQs to ring 3 and executes CLI there with IOPL = 0:
//   #GP(0): CLI needs CPL <= IOPL
//   #GP: IDT gate 13 is empty       -> #DF
//   #DF: IDT gate 8 is empty        -> triple fault
// Output: the line below, then the VMM reports a triple fault at bad_cli.
// The explainer must say that CLI is privileged and the CPU was at CPL3.

#define BROKEN_64
#include "broken.h"

#define SEL_UCODE64 0x1B
#define SEL_UDATA64 0x23

    .code64
    .text
    .globl _start
_start:
    lea     stack_top(%rip), %rsp
    SAY     "privileged_64: cli in ring 3"
    lea     ustack_top(%rip), %rax
    push    $SEL_UDATA64
    push    %rax
    push    $0x2                    // RFLAGS: IF = 0, IOPL = 0
    push    $SEL_UCODE64
    lea     bad_cli(%rip), %rax
    push    %rax
    iretq

    .globl  bad_cli
bad_cli:                            // ring 3 from here on
    cli
    jmp     bad_cli

    .bss
    .balign 16
    .skip   4096
stack_top:
    .skip   4096
ustack_top:

    BROKEN_LIB
