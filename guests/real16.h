/*
 * real16.h - the console routines the real-mode guests share.
 *
 * Each is an assembler macro that emits one routine where it is invoked,
 * so a guest carries only the routines it calls (after its own code, in
 * .text).  Every routine preserves every register.
 *
 *   PUTCHAR_HYPERCALL   putchar:   AL through the PUTCHAR hypercall
 *   UART_PUTC           uart_putc: AL through COM1, as a polling serial
 *                                  driver sends it (wait for LSR.THRE,
 *                                  then write THR)
 *   PUTS putc           puts:      the NUL-terminated string at DS:SI
 *   PRINT_DEC putc      print_dec: AX as an unsigned decimal number
 *
 * PUTS and PRINT_DEC print each character by calling `putc` (putchar or
 * uart_putc).
 */
#ifndef MINIKVM_GUEST_REAL16_H
#define MINIKVM_GUEST_REAL16_H

#include "abi.h"

.macro PUTCHAR_HYPERCALL
putchar:
    push    %ax
    push    %bx
    push    %dx
    mov     %al, %bl                // argument: the byte, in BL
    mov     $HC_PUTCHAR, %al        // number: in AL
    mov     $HC_PORT, %dx
    out     %al, %dx                // the VMM never changes a register on a hypercall
    pop     %dx
    pop     %bx
    pop     %ax
    ret
.endm

.macro UART_PUTC
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
.endm

.macro PUTS putc
puts:
    push    %ax
    push    %si
puts_next:
    lodsb
    test    %al, %al
    jz      puts_done
    call    \putc
    jmp     puts_next
puts_done:
    pop     %si
    pop     %ax
    ret
.endm

// Division yields the digits least significant first, so they are pushed
// and then popped back in printing order.
.macro PRINT_DEC putc
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
    call    \putc
    loop    emit
    pop     %dx
    pop     %cx
    pop     %bx
    pop     %ax
    ret
.endm

#endif
