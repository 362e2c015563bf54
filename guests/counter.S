// counter - prints the digits 0 to 9 and a newline through the COM1 UART.
//
// Mode: real mode, loaded at physical 0, entered at 0:0.
// Output: 0123456789<newline>
// Ends: HLT (interrupts are off).
//
// The digits are produced by a loop, and each byte goes out the way a
// polling serial driver sends it: wait for THRE in the line status
// register, then write the transmit holding register.  No hypercall.

#include "real16.h"

    .code16
    .text
    .globl _start
_start:
    mov     $'0', %cl               // CL = the next digit to print
count:
    mov     %cl, %al
    call    uart_putc
    inc     %cl
    cmp     $'9', %cl
    jbe     count

    mov     $'\n', %al
    call    uart_putc

done:
    hlt
    jmp     done                    // never resumed with IF=0; halt again if it is

// The console routine (real16.h). The stack is the VMM's SS:SP = 0:0: its first push wraps to 0xFFFE.
    UART_PUTC
