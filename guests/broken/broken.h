/*
 * broken.h - shared pieces of the deliberately broken guests (guests/broken/).
 *
 * Each broken guest is a tiny program that dies of exactly one cause, so
 * that the fault explainer's report for it can be checked.  A guest defines
 * BROKEN_32 or BROKEN_64 and includes this file before its own code; it gets:
 *
 *   SAY "text"      print text and a newline through the PUTCHAR hypercall
 *                   (every register preserved; needs a stack)
 *   EXIT            the EXIT hypercall (a guest that gets there was not broken)
 *   BROKEN_LIB      the library (puts), placed once at the end of the guest
 *
 * and for BROKEN_32 also:
 *
 *   PTE_OF          EBX = the address of the page-table entry that maps the
 *                   linear address in EAX (ECX clobbered).  For --paging
 *                   guests: it walks the live tables from CR3 and relies on
 *                   the ABI's identity mapping of 0-4 MiB to reach them.
 *   SEL_* / GATE_*  the selectors of the ABI's GDT and IDT gate types.
 *   GDT_WITH_TSS    a copy of the ABI's GDT plus a 32-bit TSS (0x28) whose
 *                   SS0:ESP0 is 0x10:kstack_top, and its GDTR `gdtr_tss`;
 *   LOAD_GDT_TSS    lgdt it, reload the segments and load TR.
 *   set_gate        (in the library) write the IDT gate ECX of the IDT at
 *                   EDI: handler EAX, selector 0x08, type/attribute word EDX.
 *
 * Library code goes into .text.lib, which guest.ld places after the guest's
 * own .text, so _start stays the image's first byte.
 */
#ifndef BROKEN_H
#define BROKEN_H

#include "abi.h"

#define SEL_KCODE   0x08
#define SEL_KDATA   0x10
#define SEL_UCODE   0x1B            /* 0x18 | RPL 3 */
#define SEL_UDATA   0x23            /* 0x20 | RPL 3 */
#define SEL_TSS     0x28

#define GATE_INT0   0x8E00          /* present, DPL 0, 32-bit interrupt gate */
#define GATE_INT0_ABSENT 0x0E00     /* the same gate with P = 0              */

#define PTE_P       0x001
#define PTE_RW      0x002
#define PTE_US      0x004
#define PDE_PS      0x080           /* a 4 MiB page, but only with CR4.PSE   */
#define CR0_WP      0x00010000

#if defined(BROKEN_32)

.macro SAY str
    .pushsection .rodata
.Lsay\@: .asciz "\str\n"
    .popsection
    push    %esi
    mov     $.Lsay\@, %esi
    call    puts
    pop     %esi
.endm

.macro EXIT
    mov     $HC_EXIT, %al
    xor     %bl, %bl
    mov     $HC_PORT, %dx
    out     %al, %dx
.Lhalt\@:
    hlt
    jmp     .Lhalt\@
.endm

.macro PTE_OF
    mov     %cr3, %ebx
    and     $0xFFFFF000, %ebx       /* the page directory (identity-mapped) */
    mov     %eax, %ecx
    shr     $22, %ecx
    mov     (%ebx,%ecx,4), %ebx     /* the PDE */
    and     $0xFFFFF000, %ebx       /* its page table */
    mov     %eax, %ecx
    shr     $12, %ecx
    and     $0x3FF, %ecx
    lea     (%ebx,%ecx,4), %ebx
.endm

.macro LOAD_GDT_TSS
    mov     $tss, %eax              /* the TSS base, split over its descriptor */
    mov     %ax, gdt_tss + 2
    shr     $16, %eax
    mov     %al, gdt_tss + 4
    mov     %ah, gdt_tss + 7
    lgdt    gdtr_tss
    ljmp    $SEL_KCODE, $.Lreload\@
.Lreload\@:
    mov     $SEL_KDATA, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    mov     $SEL_TSS, %ax
    ltr     %ax
.endm

.macro GDT_WITH_TSS
    .pushsection .data
    .balign 8
gdt_tss_table:
    .quad   0
    .quad   0x00CF9A000000FFFF      /* 0x08 ring-0 code (as in ABI.md) */
    .quad   0x00CF92000000FFFF      /* 0x10 ring-0 data                */
    .quad   0x00CFFA000000FFFF      /* 0x18 ring-3 code                */
    .quad   0x00CFF2000000FFFF      /* 0x20 ring-3 data                */
gdt_tss:
    .quad   0x0000890000000067      /* 0x28 32-bit TSS, base set by LOAD_GDT_TSS */
gdt_tss_end:
    .balign 4
    .word   0
gdtr_tss:
    .word   gdt_tss_end - gdt_tss_table - 1
    .long   gdt_tss_table
    .balign 16
tss:                                /* only SS0:ESP0 and the I/O map base matter */
    .long   0
    .long   kstack_top              /* ESP0 */
    .long   SEL_KDATA               /* SS0  */
    .fill   22, 4, 0
    .word   0
    .word   104                     /* I/O map base beyond the limit: no bitmap */
    .popsection
    .pushsection .bss
    .balign 16
    .skip   4096
    .globl  kstack_top
kstack_top:
    .popsection
.endm

.macro BROKEN_LIB
    .pushsection .text.lib, "ax"
    .code32
puts:                               /* ESI, NUL-terminated; preserves every register */
    push    %eax
    push    %ebx
    push    %edx
    push    %esi
    mov     $HC_PORT, %dx
.Lputs_next\@:
    mov     (%esi), %bl
    test    %bl, %bl
    jz      .Lputs_done\@
    mov     $HC_PUTCHAR, %al
    out     %al, %dx
    inc     %esi
    jmp     .Lputs_next\@
.Lputs_done\@:
    pop     %esi
    pop     %edx
    pop     %ebx
    pop     %eax
    ret
set_gate:                           /* EDI = IDT, ECX = vector, EAX = handler, EDX = type/attr */
    push    %eax
    push    %ebx
    lea     (%edi,%ecx,8), %ebx
    mov     %ax, (%ebx)
    movw    $SEL_KCODE, 2(%ebx)
    mov     %dx, 4(%ebx)
    shr     $16, %eax
    mov     %ax, 6(%ebx)
    pop     %ebx
    pop     %eax
    ret
    .popsection
.endm

#elif defined(BROKEN_64)

.macro SAY str
    .pushsection .rodata
.Lsay\@: .asciz "\str\n"
    .popsection
    push    %rsi
    lea     .Lsay\@(%rip), %rsi
    call    puts
    pop     %rsi
.endm

.macro EXIT
    mov     $HC_EXIT, %al
    xor     %bl, %bl
    mov     $HC_PORT, %dx
    out     %al, %dx
.Lhalt\@:
    hlt
    jmp     .Lhalt\@
.endm

.macro BROKEN_LIB
    .pushsection .text.lib, "ax"
    .code64
puts:                               /* RSI, NUL-terminated; preserves every register */
    push    %rax
    push    %rbx
    push    %rdx
    push    %rsi
    mov     $HC_PORT, %dx
.Lputs_next\@:
    mov     (%rsi), %bl
    test    %bl, %bl
    jz      .Lputs_done\@
    mov     $HC_PUTCHAR, %al
    out     %al, %dx
    inc     %rsi
    jmp     .Lputs_next\@
.Lputs_done\@:
    pop     %rsi
    pop     %rdx
    pop     %rbx
    pop     %rax
    ret
    .popsection
.endm

#else
#error "define BROKEN_32 or BROKEN_64 before including broken.h"
#endif

#endif
