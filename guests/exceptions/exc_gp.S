// exc_gp - #GP with an error code from the gate check, ring 3 to ring 0.
//
// Mode: 32-bit protected mode, no paging, own GDT/IDT/TSS (exc.h).
// The guest IRETs to ring 3 (CS 0x1B, SS 0x23, EFLAGS 0x202, the user
// stack) and executes INT 0x41, whose gate has DPL 0.  SDM vol. 3A 6.12.1.1
// and INT n: a software interrupt through a gate with DPL < CPL raises
// #GP with error code vector*8+2 (IDT bit) = 0x20A; it is a fault, so the
// saved EIP is the INT instruction and RF = 1 in the pushed EFLAGS.  The
// #GP handler is a DPL-0 interrupt gate: the CPU switches to SS0:ESP0 from
// the TSS and pushes SS, ESP, EFLAGS, CS, EIP and the error code.
//
// Output:
//   gp vec=0000000d err=0000020a eip=<gp_int> cs=0000001b eflags=00010202 esp=<ustack_top> ss=00000023 kesp=<kstack_top-24> hflags=00000002
//     kesp = ESP at the handler's entry (TSS.ESP0 minus the six words pushed)
// then EXIT from the handler.  "int41" instead means the gate's DPL was ignored.

#define EXC_PROT
#include "exc.h"

    .code32
    .text
    .globl _start
_start:
    SETUP
    GATE    13, gp_handler, GATE_INT0
    GATE    0x41, int41_handler, GATE_INT0      // DPL 0: not for ring 3
    ENTER_RING3 user, 0x202

user:                                   // ring 3; MOV keeps EFLAGS = 0x202
    mov     $SEL_UDATA, %ax
    mov     %ax, %ds
    mov     %ax, %es
    .globl  gp_int
gp_int:
    int     $0x41
    .globl  gp_after
gp_after:
    jmp     gp_after                    // not reached: the #GP handler exits

int41_handler:
    mov     $SEL_KDATA, %ax
    mov     %ax, %ds
    TEXT    "int41"
    NEWLINE
    EXIT

gp_handler:
    pushf
    pop     %ss:hflags
    mov     %esp, %ebp
    mov     $SEL_KDATA, %ax
    mov     %ax, %ds
    TEXT    "gp"
    mov     $13, %eax
    FIELD   vec
    mov     0(%ebp), %eax
    FIELD   err
    mov     4(%ebp), %eax
    FIELD   eip
    mov     8(%ebp), %eax
    FIELD   cs
    mov     12(%ebp), %eax
    FIELD   eflags
    mov     16(%ebp), %eax
    FIELD   esp
    mov     20(%ebp), %eax
    FIELD   ss
    mov     %ebp, %eax
    FIELD   kesp
    mov     hflags, %eax
    FIELD   hflags
    NEWLINE
    EXIT

    .data
hflags: .long 0

    EXC_LIB
