// broken_noncanonical - a 64-bit load from a non-canonical address.
//
// Mode: 64-bit long mode, the ABI's empty IDT.  0x0000800000000000 has
// bit 47 set and bits 63:48 clear: not canonical under 4-level paging.
//   #GP(0): non-canonical address
//   #GP: IDT gate 13 is empty       -> #DF
//   #DF: IDT gate 8 is empty        -> triple fault
// Output: the line below, then the VMM reports a triple fault at bad_load.
// The explainer must say the address is non-canonical.

#define BROKEN_64
#include "broken.h"

    .globl  bad_address             // for the tests: an absolute symbol
    .set    bad_address, 0x0000800000000000

    .code64
    .text
    .globl _start
_start:
    lea     stack_top(%rip), %rsp
    SAY     "noncanonical: load from 0x0000800000000000"
    movabs  $bad_address, %rax
    .globl  bad_load
bad_load:
    mov     (%rax), %rbx
    SAY     "survived"
    EXIT

    .bss
    .balign 16
    .skip   4096
stack_top:

    BROKEN_LIB
