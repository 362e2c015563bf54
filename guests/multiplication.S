// multiplication - the multiplication table from 2x1 to 9x9 on one line.
//
// Mode: real mode, loaded at physical 0, entered at 0:0.
// Output (one line, every entry followed by one space, then a newline):
//   2x1=2 2x2=4 ... 2x9=18 3x1=3 ... 9x9=81 <newline>
// Ends: the EXIT hypercall.
//
// Every product is computed with MUL and printed by a decimal routine;
// output goes through the PUTCHAR hypercall.

#include "abi.h"

    .code16
    .text
    .globl _start
_start:
    mov     $2, %cl                 // CL = i, the left factor, 2..9
row:
    mov     $1, %ch                 // CH = j, the right factor, 1..9
entry:
    // "i x j = i*j " - putchar and print_dec preserve CX.
    xor     %ah, %ah
    mov     %cl, %al
    call    print_dec
    mov     $'x', %al
    call    putchar
    mov     %ch, %al
    call    print_dec
    mov     $'=', %al
    call    putchar
    mov     %cl, %al
    mul     %ch                     // AX = AL * CH = i * j
    call    print_dec
    mov     $' ', %al
    call    putchar

    inc     %ch
    cmp     $9, %ch
    jbe     entry
    inc     %cl
    cmp     $9, %cl
    jbe     row

    mov     $'\n', %al
    call    putchar

    // EXIT: the VMM stops us here.
    mov     $HC_EXIT, %al
    xor     %bl, %bl
    mov     $HC_PORT, %dx
    out     %al, %dx
halt:
    hlt                             // not reached under a correct VMM
    jmp     halt

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
