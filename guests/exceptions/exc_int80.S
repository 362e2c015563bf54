// exc_int80 - INT 0x80 from ring 3 through a DPL-3 trap gate, and back.
//
// Mode: 32-bit protected mode, no paging, own GDT/IDT/TSS (exc.h).
// The guest IRETs to ring 3 (CS 0x1B, SS 0x23, EFLAGS 0x202, the user
// stack).  User code does INT 0x80 with EAX = 1; the ring-0 handler (a
// DPL-3 trap gate: IF stays set) prints the frame and IRETs back to ring 3.
// User code reads its CS into EBX and does INT 0x80 with EAX = 0; the
// handler prints the frame again and ends the guest with EXIT.
//
// Output (SDM vol. 3A 6.12.1: a software interrupt is a trap-like event:
// the saved EIP is the next instruction and RF is pushed as it was, 0; the
// privilege change takes SS0:ESP0 from the TSS and pushes SS, ESP, EFLAGS,
// CS, EIP, so the handler starts at TSS.ESP0 - 20):
//   int80 eax=00000001 eip=<int80_after1> cs=0000001b eflags=00000202 esp=<ustack_top> ss=00000023 kesp=<kstack_top-20> hflags=00000202 ebx=00000000
//   int80 eax=00000000 eip=<int80_after2> cs=0000001b eflags=00000202 esp=<ustack_top> ss=00000023 kesp=<kstack_top-20> hflags=00000202 ebx=0000001b

#define EXC_PROT
#include "exc.h"

    .code32
    .text
    .globl _start
_start:
    SETUP
    GATE    0x80, int80_handler, GATE_TRAP3
    ENTER_RING3 user, 0x202

user:                                   // ring 3; only MOV and INT: EFLAGS stays 0x202
    mov     $SEL_UDATA, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     $1, %eax
    mov     $0, %ebx
    int     $0x80
    .globl  int80_after1
int80_after1:
    mov     $0, %ebx
    mov     %cs, %bx                    // proof that IRET brought us back to ring 3
    mov     $0, %eax
    int     $0x80
    .globl  int80_after2
int80_after2:
    jmp     int80_after2                // not reached: EAX = 0 ends the guest

int80_handler:
    pushf
    pop     %ss:hflags
    mov     %esp, %ss:kesp
    pusha
    push    %ds
    mov     $SEL_KDATA, %cx
    mov     %cx, %ds
    mov     %esp, %ebp
    TEXT    "int80"
    FIELD   eax
    mov     kesp, %esi
    mov     0(%esi), %eax
    FIELD   eip
    mov     4(%esi), %eax
    FIELD   cs
    mov     8(%esi), %eax
    FIELD   eflags
    mov     12(%esi), %eax
    FIELD   esp
    mov     16(%esi), %eax
    FIELD   ss
    mov     %esi, %eax
    FIELD   kesp
    mov     hflags, %eax
    FIELD   hflags
    mov     %ebx, %eax
    FIELD   ebx
    NEWLINE
    pop     %ds
    popa
    test    %eax, %eax
    jz      int80_exit
    iret
int80_exit:
    EXIT

    .data
hflags: .long 0
kesp:   .long 0

    EXC_LIB
