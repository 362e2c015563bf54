// exc_long_pf - a page fault in 64-bit long mode, with the 64-bit frame.
//
// Mode: 64-bit long mode, loaded at 0x1000 (ABI.md), under the VMM's
// identity map of the guest's RAM (4 MiB); own GDT, TSS and 64-bit IDT
// (exc.h).  With RFLAGS = 0x2 the guest reads lpf_addr, which no page
// table maps, and the #PF handler prints and exits.
//
// Output (SDM vol. 3A 6.14.2: in IA-32e mode the CPU aligns RSP to 16 bytes
// and always pushes SS, RSP, RFLAGS, CS, RIP (and the error code), 8 bytes
// each; #PF is a fault: RIP = the faulting instruction, RF = 1):
//   lpf cr2=<lpf_addr> err=0000000000000000 rip=<lpf_insn> cs=0000000000000008 rflags=0000000000010002 rsp=<stack_top> ss=0000000000000010 frame=0000000000000030 hflags=0000000000000002
//     frame = bytes the CPU pushed (6 * 8)

#define EXC_LONG
#include "exc.h"

#define LPF_ADDR 0x12345678     /* PD entry 0x91 of the first GiB: not present */

    .globl  lpf_addr
    .set    lpf_addr, LPF_ADDR

    .code64
    .text
    .globl _start
_start:
    SETUP
    GATE    14, pf_handler, GATE_INT0

    mov     $LPF_ADDR, %ebx
    mov     %rsp, rsp_before(%rip)
    SET_FLAGS
    .globl  lpf_insn
lpf_insn:
    mov     (%rbx), %rax
    TEXT    "no fault"
    NEWLINE
    EXIT

pf_handler:
    pushfq
    popq    hflags(%rip)
    mov     %rsp, %rbp
    TEXT    "lpf"
    mov     %cr2, %rax
    FIELD   cr2
    mov     0(%rbp), %rax
    FIELD   err
    mov     8(%rbp), %rax
    FIELD   rip
    mov     16(%rbp), %rax
    FIELD   cs
    mov     24(%rbp), %rax
    FIELD   rflags
    mov     32(%rbp), %rax
    FIELD   rsp
    mov     40(%rbp), %rax
    FIELD   ss
    mov     rsp_before(%rip), %rax
    sub     %rbp, %rax
    FIELD   frame
    mov     hflags(%rip), %rax
    FIELD   hflags
    NEWLINE
    EXIT

    .data
rsp_before: .quad 0
hflags:     .quad 0

    EXC_LIB
