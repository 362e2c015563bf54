// exc_de - #DE (divide error) in 32-bit protected mode, same privilege.
//
// Mode: 32-bit protected mode, no paging, own GDT/IDT/TSS (exc.h).
// The guest divides by zero with EFLAGS = 0x202 (IF set).  The #DE handler
// (an interrupt gate) prints what the CPU pushed, moves the saved EIP past
// the DIV and returns with IRET; the guest then prints its EFLAGS, EXIT.
//
// Output (SDM vol. 3A ch. 6: #DE is a fault, no error code; a fault pushes
// RF = 1; an interrupt gate clears IF, TF, NT, RF, VM in the handler):
//   de vec=00000000 eip=<de_insn> cs=00000008 eflags=00010202 frame=0000000c hflags=00000002
//   resumed eflags=00000202 eax=000004d2
//     frame  = bytes the CPU pushed (no error code: EIP, CS, EFLAGS)
//     hflags = the handler's own EFLAGS

#define EXC_PROT
#include "exc.h"

    .code32
    .text
    .globl _start
_start:
    SETUP
    GATE    0, de_handler, GATE_INT0

    mov     $1234, %eax             // MOV leaves EFLAGS alone from here on
    mov     $0, %edx
    mov     $0, %ecx
    mov     %esp, esp_before
    SET_FLAGS 0x202
    .globl  de_insn
de_insn:
    div     %ecx
    .globl  de_resume
de_resume:
    pushf
    pop     %edx
    push    %eax
    TEXT    "resumed"
    mov     %edx, %eax
    FIELD   eflags
    pop     %eax
    FIELD   eax
    NEWLINE
    EXIT

de_handler:
    pushf                           // the handler's EFLAGS before anything changes them
    pop     hflags
    mov     %esp, %ebp
    TEXT    "de"
    mov     $0, %eax
    FIELD   vec
    mov     0(%ebp), %eax
    FIELD   eip
    mov     4(%ebp), %eax
    FIELD   cs
    mov     8(%ebp), %eax
    FIELD   eflags
    mov     esp_before, %eax
    sub     %ebp, %eax
    FIELD   frame
    mov     hflags, %eax
    FIELD   hflags
    NEWLINE
    mov     $1234, %eax             // what the guest had in EAX (printing used it)
    addl    $(de_resume - de_insn), (%esp)
    iret

    .data
esp_before: .long 0
hflags:     .long 0

    EXC_LIB
