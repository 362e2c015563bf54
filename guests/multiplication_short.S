// multiplication_short - one row of the multiplication table, through COM1.
//
// Mode: real mode, loaded at physical 0, entered at 0:0.
// Output (every entry followed by one space, then a newline):
//   2x1=2 2x2=4 2x3=6 2x4=8 2x5=10 2x6=12 2x7=14 2x8=16 2x9=18 <newline>
// Ends: HLT (interrupts are off).
//
// Same table code as "multiplication", but only for 2, and the bytes go out
// through the UART (poll LSR.THRE, write THR) instead of a hypercall.

#include "abi.h"

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
    call    uart_putc
    loop    emit
    pop     %dx
    pop     %cx
    pop     %bx
    pop     %ax
    ret

// uart_putc: send AL through COM1.  Preserves every register.
uart_putc:
    push    %ax
    push    %dx
    mov     %al, %ah                // keep the byte: IN overwrites AL
    mov     $COM1_LSR, %dx
wait_thre:
    in      %dx, %al
    test    $LSR_THRE, %al          // transmitter ready for another byte?
    jz      wait_thre
    mov     %ah, %al
    mov     $COM1_THR, %dx
    out     %al, %dx
    pop     %dx
    pop     %ax
    ret
