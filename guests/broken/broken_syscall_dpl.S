// broken_syscall_dpl - a system call gate that ring 3 may not use.
//
// Mode: 32-bit protected mode, paging off, the ABI's GDT and IDT (all gates
// empty).  The guest installs a handler for INT 0x80, its system call, but
// with DPL 0 (0x8E00) instead of DPL 3 (0xEE00), IRETs to ring 3 and
// makes the call:
//   INT 0x80 from CPL3 through a DPL0 gate -> #GP(0x80*8+2 = 0x402)
//   #GP: IDT gate 13 is empty               -> #DF
//   #DF: IDT gate 8 is empty                -> triple fault
// Output: the line below, then the VMM reports a triple fault at bad_int80
// (the INT instruction itself, not the one after it).
// The explainer must say that the gate's DPL forbids the call from CPL3.

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "syscall_dpl: int 0x80 from ring 3 through a DPL 0 gate"
    sidt    idtr
    mov     idtr + 2, %edi
    mov     $0x80, %ecx
    mov     $sys_entry, %eax
    mov     $GATE_INT0, %edx        // the bug: a system call gate needs DPL 3 (0xEE00)
    call    set_gate
    push    $SEL_UDATA
    push    $ustack_top
    push    $0x2
    push    $SEL_UCODE
    push    $bad_int80
    iret

    .globl  bad_int80
bad_int80:                          // ring 3 from here on
    int     $0x80
    jmp     bad_int80

sys_entry:                          // not reached
    mov     $SEL_KDATA, %ax
    mov     %ax, %ds
    SAY     "syscall"
    EXIT

    .data
    .balign 4
    .word   0
idtr:
    .word   0
    .long   0

    .bss
    .balign 16
    .skip   4096
stack_top:
    .skip   4096
ustack_top:

    BROKEN_LIB
