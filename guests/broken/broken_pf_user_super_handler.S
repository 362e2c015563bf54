// broken_pf_user_super_handler - ring 3 reads a supervisor page; the #PF
// handler itself then faults.
//
// Mode: the --paging layout.  As broken_pf_user_super, but the IDT has a
// #PF gate; its handler is an unfinished stub (UD2).  So:
//   #PF(0x5) CR2 = page_sup from ring 3: delivered to pf_handler (the TSS
//   gives the ring-0 stack)
//   #UD at pf_handler: IDT gate 6 is empty -> #GP -> #DF -> triple fault
// Output: the line below, then the VMM reports a triple fault at pf_handler.
// The explainer must still name the user/supervisor #PF that started it.

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "pf_user_super_handler: ring 3 reads a supervisor page; the #PF handler is a stub"
    LOAD_GDT_TSS
    sidt    idtr                    // the ABI's IDT (all gates empty), plus a #PF gate
    mov     idtr + 2, %edi
    mov     $14, %ecx
    mov     $pf_handler, %eax
    mov     $GATE_INT0, %edx
    call    set_gate
    call    open_to_ring3
    push    $SEL_UDATA
    push    $ustack_top
    push    $0x2
    push    $SEL_UCODE
    push    $user
    iret

user:
    mov     $SEL_UDATA, %ax
    mov     %ax, %ds
    mov     %ax, %es
    .globl  bad_user_read
bad_user_read:
    mov     page_sup, %eax
    jmp     .

    .globl  pf_handler
pf_handler:
    ud2                             // "TODO": the bug

open_to_ring3:                      // as in broken_pf_user_super.S
    mov     $_start, %eax
    PTE_OF
    mov     %cr3, %edx
    and     $0xFFFFF000, %edx
    mov     $_start, %ecx
    shr     $22, %ecx
    orl     $PTE_US, (%edx,%ecx,4)
    and     $0xFFFFF000, %ebx
    xor     %ecx, %ecx
1:  orl     $PTE_US, (%ebx,%ecx,4)
    inc     %ecx
    cmp     $1024, %ecx
    jb      1b
    mov     $page_sup, %eax
    PTE_OF
    andl    $~PTE_US, (%ebx)
    mov     %cr3, %eax
    mov     %eax, %cr3
    ret

    GDT_WITH_TSS

    .data
    .balign 4
    .word   0
idtr:
    .word   0
    .long   0

    .bss
    .balign 4096
    .globl  page_sup
page_sup:
    .skip   4096
    .skip   4096
stack_top:
    .skip   4096
ustack_top:

    BROKEN_LIB
