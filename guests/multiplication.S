// multiplication - the multiplication table from 2x1 to 9x9 on one line.
//
// Mode: real mode, loaded at physical 0, entered at 0:0.
// Output (one line, every entry followed by one space, then a newline):
//   2x1=2 2x2=4 ... 2x9=18 3x1=3 ... 9x9=81 <newline>
// Ends: the EXIT hypercall.
//
// Every product is computed with MUL and printed by a decimal routine;
// output goes through the PUTCHAR hypercall.

#include "real16.h"

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

// The console routines (real16.h).
    PRINT_DEC putchar
    PUTCHAR_HYPERCALL
