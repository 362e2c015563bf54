/*
 * exc.h - shared pieces of the exception/interrupt test guests.
 *
 * A guest defines one of EXC_REAL, EXC_PROT or EXC_LONG and includes this
 * file before its own code.  It provides, for that mode:
 *
 *   - printing through the PUTCHAR hypercall: putc (AL), puts (SI/ESI/RSI),
 *     puthex (AX / EAX / RAX as 4 / 8 / 16 hex digits), and the macros
 *     TEXT "str", FIELD name (prints " name=<hex of the accumulator>"),
 *     NEWLINE, EXIT;
 *   - (32/64-bit) a GDT with ring-0 and ring-3 code and data and a TSS,
 *     an IDT whose every gate first points at a stub that prints
 *     "unexpected vec=.." and the words the CPU pushed, GATE to install a
 *     handler, SETUP to load all of it, ENTER_RING3 to IRET to user code.
 *
 * EXC_LIB emits the library; a guest invokes it once, at its end.  In 32-
 * and 64-bit mode the code goes into .text.lib, which guest.ld places after
 * the guest's own .text, so _start stays the first byte of the image; in
 * real mode it is emitted right where EXC_LIB stands.
 *
 * Every output line is "<tag> key=value key=value ...", values in hex: the
 * tests parse it and compare every value with the one the SDM prescribes.
 */
#ifndef EXC_H
#define EXC_H

#include "abi.h"

/* Selectors of the guests' own GDT (RPL included for ring 3). */
#define SEL_KCODE   0x08
#define SEL_KDATA   0x10
#define SEL_UCODE   0x1B
#define SEL_UDATA   0x23
#define SEL_TSS     0x28

/* Gate type/attribute words, as they sit in bytes 4-5 of a gate. */
#define GATE_INT0   0x8E00      /* present, DPL 0, interrupt gate (IF cleared) */
#define GATE_TRAP0  0x8F00      /* present, DPL 0, trap gate (IF kept)         */
#define GATE_INT3   0xEE00      /* present, DPL 3, interrupt gate              */
#define GATE_TRAP3  0xEF00      /* present, DPL 3, trap gate                   */
#define GATE_ABSENT 0x0E00      /* P = 0: delivering through it faults (#NP)   */

#define STUB_SIZE   16          /* each "unexpected" stub is 16-byte aligned   */

/* ------------------------------------------------------------------------ */
#if defined(EXC_REAL)
/* Real mode: printing only (a real-mode guest has no descriptor tables). */

.macro TEXT str
    .pushsection .rodata
.Ltext\@: .asciz "\str"
    .popsection
    push    %si
    mov     $.Ltext\@, %si
    call    puts
    pop     %si
.endm

.macro FIELD name               /* " name=" and AX as 4 hex digits */
    TEXT    " \name="
    call    puthex
.endm

.macro NEWLINE
    push    %ax
    mov     $'\n', %al
    call    putc
    pop     %ax
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

.macro EXC_LIB                  /* place it at the end of the guest */
    .code16
putc:                           /* AL; preserves every register (not the flags) */
    push    %ax
    push    %bx
    push    %dx
    mov     %al, %bl
    mov     $HC_PUTCHAR, %al
    mov     $HC_PORT, %dx
    out     %al, %dx
    pop     %dx
    pop     %bx
    pop     %ax
    ret
puts:                           /* DS:SI, NUL-terminated */
    push    %ax
    push    %si
.Lputs_next\@:
    lodsb
    test    %al, %al
    jz      .Lputs_done\@
    call    putc
    jmp     .Lputs_next\@
.Lputs_done\@:
    pop     %si
    pop     %ax
    ret
puthex:                         /* AX as 4 hex digits */
    push    %ax
    push    %cx
    push    %dx
    mov     %ax, %dx
    mov     $4, %cx
.Lhex_next\@:
    rol     $4, %dx
    mov     %dl, %al
    and     $0xf, %al
    add     $'0', %al
    cmp     $'9', %al
    jbe     .Lhex_put\@
    add     $('a' - '0' - 10), %al
.Lhex_put\@:
    call    putc
    loop    .Lhex_next\@
    pop     %dx
    pop     %cx
    pop     %ax
    ret
.endm

/* ------------------------------------------------------------------------ */
#elif defined(EXC_PROT)
/* 32-bit protected mode. */

.macro TEXT str
    .pushsection .rodata
.Ltext\@: .asciz "\str"
    .popsection
    push    %esi
    mov     $.Ltext\@, %esi
    call    puts
    pop     %esi
.endm

.macro FIELD name               /* " name=" and EAX as 8 hex digits */
    TEXT    " \name="
    call    puthex
.endm

.macro NEWLINE
    push    %eax
    mov     $'\n', %al
    call    putc
    pop     %eax
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

/* EFLAGS = 0x2 (or `value`): a known value for the frame checks. */
.macro SET_FLAGS value=0x2
    push    $\value
    popf
.endm

/* Install `handler` for `vector` with the type/attribute word `attr`. */
.macro GATE vector, handler, attr
    push    %eax
    push    %ecx
    push    %edx
    mov     $\handler, %eax
    mov     $\vector, %ecx
    mov     $\attr, %edx
    call    set_gate
    pop     %edx
    pop     %ecx
    pop     %eax
.endm

/* Own stack, zeroed .bss, own GDT (with the TSS), reloaded segments, TR, IDT. */
.macro SETUP
    mov     $stack_top, %esp
    cld
    mov     $__bss_start, %edi
    mov     $__bss_end, %ecx
    sub     %edi, %ecx
    xor     %eax, %eax
    rep stosb
    mov     $tss, %eax              /* the TSS base, split over its descriptor */
    mov     %ax, gdt_tss + 2
    shr     $16, %eax
    mov     %al, gdt_tss + 4
    mov     %ah, gdt_tss + 7
    lgdt    gdtr
    ljmp    $SEL_KCODE, $.Lreload\@
.Lreload\@:
    mov     $SEL_KDATA, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %fs
    mov     %ax, %gs
    mov     %ax, %ss
    mov     $SEL_TSS, %ax
    ltr     %ax
    call    fill_idt
    lidt    idtr
.endm

/* IRET to ring 3 at `target` on the user stack with EFLAGS = `flags`. */
.macro ENTER_RING3 target, flags
    push    $SEL_UDATA
    push    $ustack_top
    push    $\flags
    push    $SEL_UCODE
    push    $\target
    iret
.endm

.macro EXC_LIB                  /* place it at the end of the guest */
    .pushsection .text.lib, "ax"
    .code32
putc:                           /* AL; preserves every register */
    push    %eax
    push    %ebx
    push    %edx
    mov     %al, %bl
    mov     $HC_PUTCHAR, %al
    mov     $HC_PORT, %dx
    out     %al, %dx
    pop     %edx
    pop     %ebx
    pop     %eax
    ret
puts:                           /* ESI, NUL-terminated */
    push    %eax
    push    %esi
.Lputs_next\@:
    lodsb
    test    %al, %al
    jz      .Lputs_done\@
    call    putc
    jmp     .Lputs_next\@
.Lputs_done\@:
    pop     %esi
    pop     %eax
    ret
puthex:                         /* EAX as 8 hex digits */
    push    %eax
    push    %ecx
    push    %edx
    mov     %eax, %edx
    mov     $8, %ecx
.Lhex_next\@:
    rol     $4, %edx
    mov     %dl, %al
    and     $0xf, %al
    add     $'0', %al
    cmp     $'9', %al
    jbe     .Lhex_put\@
    add     $('a' - '0' - 10), %al
.Lhex_put\@:
    call    putc
    loop    .Lhex_next\@
    pop     %edx
    pop     %ecx
    pop     %eax
    ret

/* set_gate: ECX = vector, EAX = handler, EDX = type/attribute word. */
set_gate:
    push    %eax
    push    %ebx
    lea     idt(,%ecx,8), %ebx
    mov     %ax, (%ebx)
    movw    $SEL_KCODE, 2(%ebx)
    mov     %dx, 4(%ebx)
    shr     $16, %eax
    mov     %ax, 6(%ebx)
    pop     %ebx
    pop     %eax
    ret

/* fill_idt: every vector to its "unexpected" stub, DPL-0 interrupt gates. */
fill_idt:
    pusha
    xor     %ecx, %ecx
    mov     $vector_stubs, %eax
    mov     $GATE_INT0, %edx
.Lfill_next\@:
    call    set_gate
    add     $STUB_SIZE, %eax
    inc     %ecx
    cmp     $256, %ecx
    jb      .Lfill_next\@
    popa
    ret

/* A vector nobody expected: print it and the five words above it, stop. */
unexpected:
    mov     $SEL_KDATA, %ax
    mov     %ax, %ds
    TEXT    "unexpected"
    pop     %eax
    FIELD   vec
    mov     0(%esp), %eax
    FIELD   w0
    mov     4(%esp), %eax
    FIELD   w1
    mov     8(%esp), %eax
    FIELD   w2
    mov     12(%esp), %eax
    FIELD   w3
    mov     16(%esp), %eax
    FIELD   w4
    NEWLINE
    EXIT

    .balign STUB_SIZE
vector_stubs:                   /* push $vector (imm32); jmp unexpected */
    .set    .Lvec, 0
    .rept   256
    .balign STUB_SIZE
    .byte   0x68
    .long   .Lvec
    jmp     unexpected
    .set    .Lvec, .Lvec + 1
    .endr
    .popsection

    .pushsection .data
    .balign 8
gdt:
    .quad   0
    .quad   0x00CF9A000000FFFF      /* 0x08 ring-0 code, flat, 32-bit */
    .quad   0x00CF92000000FFFF      /* 0x10 ring-0 data               */
    .quad   0x00CFFA000000FFFF      /* 0x18 ring-3 code               */
    .quad   0x00CFF2000000FFFF      /* 0x20 ring-3 data               */
gdt_tss:
    .quad   0x0000890000000067      /* 0x28 32-bit TSS (base set by SETUP) */
gdt_end:
    .balign 4
    .word   0
gdtr:
    .word   gdt_end - gdt - 1
    .long   gdt
    .word   0
idtr:
    .word   256 * 8 - 1
    .long   idt

    .balign 16
    .globl  tss
tss:                            /* only SS0:ESP0 and the I/O map base matter */
    .long   0                   /* previous task link */
    .long   kstack_top          /* ESP0 */
    .long   SEL_KDATA           /* SS0 */
    .fill   22, 4, 0            /* ESP1 ... LDT */
    .word   0                   /* T */
    .word   104                 /* I/O map base beyond the limit: no bitmap */
    .popsection

    .pushsection .bss
    .balign 8
idt:
    .skip   256 * 8
    .balign 16
    .globl  stack_top, kstack_top, ustack_top
stack:                          /* ring 0 before any interrupt */
    .skip   4096
stack_top:
kstack:                         /* TSS.ESP0: ring 0 after a privilege change */
    .skip   4096
kstack_top:
ustack:                         /* ring 3 */
    .skip   4096
ustack_top:
    .popsection
.endm

/* ------------------------------------------------------------------------ */
#elif defined(EXC_LONG)
/* 64-bit long mode. */

.macro TEXT str
    .pushsection .rodata
.Ltext\@: .asciz "\str"
    .popsection
    push    %rsi
    lea     .Ltext\@(%rip), %rsi
    call    puts
    pop     %rsi
.endm

.macro FIELD name               /* " name=" and RAX as 16 hex digits */
    TEXT    " \name="
    call    puthex
.endm

.macro NEWLINE
    push    %rax
    mov     $'\n', %al
    call    putc
    pop     %rax
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

.macro SET_FLAGS value=0x2
    push    $\value
    popfq
.endm

.macro GATE vector, handler, attr
    push    %rax
    push    %rcx
    push    %rdx
    lea     \handler(%rip), %rax
    mov     $\vector, %ecx
    mov     $\attr, %edx
    call    set_gate
    pop     %rdx
    pop     %rcx
    pop     %rax
.endm

/* Own stack, zeroed .bss, own GDT (with a 64-bit TSS), reloaded CS and data, TR, IDT. */
.macro SETUP
    lea     stack_top(%rip), %rsp
    cld
    lea     __bss_start(%rip), %rdi
    lea     __bss_end(%rip), %rcx
    sub     %rdi, %rcx
    xor     %eax, %eax
    rep stosb
    lea     tss(%rip), %rax         /* the TSS base, split over its descriptor */
    mov     %ax, gdt_tss + 2(%rip)
    shr     $16, %rax
    mov     %al, gdt_tss + 4(%rip)
    mov     %ah, gdt_tss + 7(%rip)
    shr     $16, %rax
    mov     %eax, gdt_tss + 8(%rip)
    lgdt    gdtr(%rip)
    push    $SEL_KCODE
    lea     .Lreload\@(%rip), %rax
    push    %rax
    lretq
.Lreload\@:
    mov     $SEL_KDATA, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    mov     $SEL_TSS, %ax
    ltr     %ax
    call    fill_idt
    lidt    idtr(%rip)
.endm

.macro EXC_LIB
    .pushsection .text.lib, "ax"
    .code64
putc:                           /* AL; preserves every register */
    push    %rax
    push    %rbx
    push    %rdx
    mov     %al, %bl
    mov     $HC_PUTCHAR, %al
    mov     $HC_PORT, %dx
    out     %al, %dx
    pop     %rdx
    pop     %rbx
    pop     %rax
    ret
puts:                           /* RSI, NUL-terminated */
    push    %rax
    push    %rsi
.Lputs_next\@:
    lodsb
    test    %al, %al
    jz      .Lputs_done\@
    call    putc
    jmp     .Lputs_next\@
.Lputs_done\@:
    pop     %rsi
    pop     %rax
    ret
puthex:                         /* RAX as 16 hex digits */
    push    %rax
    push    %rcx
    push    %rdx
    mov     %rax, %rdx
    mov     $16, %ecx
.Lhex_next\@:
    rol     $4, %rdx
    mov     %dl, %al
    and     $0xf, %al
    add     $'0', %al
    cmp     $'9', %al
    jbe     .Lhex_put\@
    add     $('a' - '0' - 10), %al
.Lhex_put\@:
    call    putc
    dec     %ecx
    jnz     .Lhex_next\@
    pop     %rdx
    pop     %rcx
    pop     %rax
    ret

/* set_gate: ECX = vector, RAX = handler, EDX = type/attribute word (16-byte gates). */
set_gate:
    push    %rax
    push    %rbx
    push    %rcx
    lea     idt(%rip), %rbx
    shl     $4, %rcx
    add     %rcx, %rbx
    mov     %ax, (%rbx)
    movw    $SEL_KCODE, 2(%rbx)
    mov     %dx, 4(%rbx)
    shr     $16, %rax
    mov     %ax, 6(%rbx)
    shr     $16, %rax
    mov     %eax, 8(%rbx)
    movl    $0, 12(%rbx)
    pop     %rcx
    pop     %rbx
    pop     %rax
    ret

fill_idt:
    push    %rax
    push    %rcx
    push    %rdx
    xor     %ecx, %ecx
    lea     vector_stubs(%rip), %rax
    mov     $GATE_INT0, %edx
.Lfill_next\@:
    call    set_gate
    add     $STUB_SIZE, %rax
    inc     %ecx
    cmp     $256, %ecx
    jb      .Lfill_next\@
    pop     %rdx
    pop     %rcx
    pop     %rax
    ret

unexpected:
    TEXT    "unexpected"
    pop     %rax
    FIELD   vec
    mov     0(%rsp), %rax
    FIELD   w0
    mov     8(%rsp), %rax
    FIELD   w1
    mov     16(%rsp), %rax
    FIELD   w2
    mov     24(%rsp), %rax
    FIELD   w3
    mov     32(%rsp), %rax
    FIELD   w4
    NEWLINE
    EXIT

    .balign STUB_SIZE
vector_stubs:                   /* push $vector (imm32, sign-extended); jmp unexpected */
    .set    .Lvec, 0
    .rept   256
    .balign STUB_SIZE
    .byte   0x68
    .long   .Lvec
    jmp     unexpected
    .set    .Lvec, .Lvec + 1
    .endr
    .popsection

    .pushsection .data
    .balign 8
gdt:
    .quad   0
    .quad   0x00AF9A000000FFFF      /* 0x08 ring-0 code, 64-bit */
    .quad   0x00CF92000000FFFF      /* 0x10 ring-0 data         */
    .quad   0x00AFFA000000FFFF      /* 0x18 ring-3 code, 64-bit */
    .quad   0x00CFF2000000FFFF      /* 0x20 ring-3 data         */
gdt_tss:
    .quad   0x0000890000000067      /* 0x28 64-bit TSS, 16 bytes (base set by SETUP) */
    .quad   0
gdt_end:
    .balign 8
    .skip   6
gdtr:
    .word   gdt_end - gdt - 1
    .quad   gdt
    .skip   6
idtr:
    .word   256 * 16 - 1
    .quad   idt

    .balign 16
    .globl  tss
tss:                            /* only RSP0 and the I/O map base matter */
    .long   0
    .quad   kstack_top          /* RSP0 */
    .fill   22, 4, 0            /* RSP1, RSP2, reserved, IST1-7, reserved */
    .word   0
    .word   104                 /* I/O map base beyond the limit: no bitmap */
    .popsection

    .pushsection .bss
    .balign 16
idt:
    .skip   256 * 16
    .balign 16
    .globl  stack_top, kstack_top
stack:
    .skip   4096
stack_top:
kstack:
    .skip   4096
kstack_top:
    .popsection
.endm

#else
#error "define EXC_REAL, EXC_PROT or EXC_LONG before including exc.h"
#endif

#endif
