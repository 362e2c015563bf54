// multiplication_short - one row of the multiplication table, through COM1.
//
// Mode: real mode, loaded at physical 0, entered at 0:0.
// Output (every entry followed by one space, then a newline):
//   2x1=2 2x2=4 2x3=6 2x4=8 2x5=10 2x6=12 2x7=14 2x8=16 2x9=18 <newline>
// Ends: HLT (interrupts are off).
//
// Same table code as "multiplication", but only for 2, and the bytes go out
// through the UART (poll LSR.THRE, write THR) instead of a hypercall.

#include "real16.h"

    .code16
    .text
    .globl _start
_start:
    mov     $2, %cl                 // CL = i, fixed at 2 for the short table
    mov     $1, %ch                 // CH = j, 1..9
entry:
    // "i x j = i*j " - uart_putc and print_dec preserve CX.
    xor     %ah, %ah
    mov     %cl, %al
    call    print_dec
    mov     $'x', %al
    call    uart_putc
    mov     %ch, %al
    call    print_dec
    mov     $'=', %al
    call    uart_putc
    mov     %cl, %al
    mul     %ch                     // AX = AL * CH = i * j
    call    print_dec
    mov     $' ', %al
    call    uart_putc

    inc     %ch
    cmp     $9, %ch
    jbe     entry

    mov     $'\n', %al
    call    uart_putc

done:
    hlt
    jmp     done                    // never resumed with IF=0; halt again if it is

// The console routines (real16.h).
    PRINT_DEC uart_putc
    UART_PUTC
