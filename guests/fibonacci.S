// fibonacci - the first 15 Fibonacci numbers, F0 to F14, computed by addition.
//
// Mode: real mode, loaded at physical 0, entered at 0:0.
// Output:
//   Fibonacci: 0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377<newline>
// Ends: HLT (interrupts are off).
// Output goes through the PUTCHAR hypercall.

#include "abi.h"

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

// puts: print the NUL-terminated string at DS:SI.  Preserves every register.
puts:
    push    %ax
    push    %si
puts_next:
    lodsb
    test    %al, %al
    jz      puts_done
    call    putchar
    jmp     puts_next
puts_done:
    pop     %si
    pop     %ax
    ret

// print_dec: print AX as an unsigned decimal number.  Preserves every register.
// Division yields the digits least significant first, so they are pushed
// and then popped back in printing order.
print_dec:
    push    %ax
    push    %bx
    push    %cx
    push    %dx
    mov     $10, %bx
    xor     %cx, %cx                // CX = number of digits pushed
split:
    xor     %dx, %dx
    div     %bx                     // AX = DX:AX / 10, DX = the last digit
    push    %dx
    inc     %cx
    test    %ax, %ax
    jnz     split
emit:
    pop     %ax
    add     $'0', %al
    call    putchar
    loop    emit
    pop     %dx
    pop     %cx
    pop     %bx
    pop     %ax
    ret

// putchar: write AL to the console with the PUTCHAR hypercall.
// Preserves every register (the VMM never changes them on a hypercall).
putchar:
    push    %ax
    push    %bx
    push    %dx
    mov     %al, %bl                // argument: the byte, in BL
    mov     $HC_PUTCHAR, %al        // number: in AL
    mov     $HC_PORT, %dx
    out     %al, %dx
    pop     %dx
    pop     %bx
    pop     %ax
    ret

    .section .rodata
title:
    .asciz  "Fibonacci: "
separator:
    .asciz  ", "
