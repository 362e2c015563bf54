// exc_ud - #UD (invalid opcode, UD2) in 32-bit protected mode, same privilege.
//
// Mode: 32-bit protected mode, no paging, own GDT/IDT/TSS (exc.h).
// The guest executes UD2 with EFLAGS = 0x202.  The #UD handler (an
// interrupt gate) prints what the CPU pushed, moves the saved EIP past the
// UD2 and returns with IRET; the guest then prints its EFLAGS, EXIT.
//
// Output (SDM vol. 3A ch. 6: #UD is a fault without error code, so the
// saved EIP is the UD2 itself and RF = 1 in the pushed EFLAGS):
//   ud vec=00000006 eip=<ud_insn> cs=00000008 eflags=00010202 frame=0000000c hflags=00000002
//   resumed eflags=00000202 eax=0000beef

#define EXC_PROT
#include "exc.h"

    .code32
    .text
    .globl _start
_start:
    SETUP
    GATE    6, ud_handler, GATE_INT0

    mov     $0xbeef, %eax
    mov     %esp, esp_before
    SET_FLAGS 0x202
    .globl  ud_insn
ud_insn:
    ud2
    .globl  ud_resume
ud_resume:
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

ud_handler:
    pushf
    pop     hflags
    mov     %esp, %ebp
    push    %eax
    TEXT    "ud"
    mov     $6, %eax
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
    pop     %eax
    addl    $(ud_resume - ud_insn), (%esp)
    iret

    .data
esp_before: .long 0
hflags:     .long 0

    EXC_LIB
