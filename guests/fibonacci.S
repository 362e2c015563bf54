// fibonacci - the first 15 Fibonacci numbers, F0 to F14, computed by addition.
//
// Mode: real mode, loaded at physical 0, entered at 0:0.
// Output:
//   Fibonacci: 0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377<newline>
// Ends: HLT (interrupts are off).
// Output goes through the PUTCHAR hypercall.

#include "real16.h"

#define COUNT 15                    /* how many numbers: F0 .. F(COUNT-1) */

    .code16
    .text
    .globl _start
_start:
    // DS must equal CS for the strings: the image is linked at offset 0.
    mov     %cs, %ax
    mov     %ax, %ds
    cld

    mov     $title, %si
    call    puts

    xor     %ax, %ax                // AX = F(n),   starting at F0 = 0
    mov     $1, %bx                 // BX = F(n+1), starting at F1 = 1
    mov     $COUNT, %cx             // CX = numbers still to print
next:
    call    print_dec               // print F(n)
    cmp     $1, %cx                 // separator after all but the last
    je      step
    mov     $separator, %si
    call    puts
step:
    // (F(n), F(n+1)) becomes (F(n+1), F(n) + F(n+1)).
    mov     %bx, %dx
    add     %ax, %bx
    mov     %dx, %ax
    loop    next

    mov     $'\n', %al
    call    putchar

done:
    hlt
    jmp     done                    // never resumed with IF=0; halt again if it is

// The console routines (real16.h).
    PUTS putchar
    PRINT_DEC putchar
    PUTCHAR_HYPERCALL

    .section .rodata
title:
    .asciz  "Fibonacci: "
separator:
    .asciz  ", "
