// hello_pm - a 32-bit protected-mode guest (no paging) talking to COM1.
//
// Mode: 32-bit protected mode, paging off.  Loaded at physical 0x1000 and
// entered there with CS = 0x08 (flat 32-bit code) and DS/ES/SS/FS/GS = 0x10
// (flat data) from the VMM's GDT, IF = 0.
// Output: Hello from protected mode!<newline>   (through the UART)
// Ends: the EXIT hypercall.
//
// The VMM's ESP is not part of the contract we rely on, so the guest sets
// up its own stack in .bss before its first CALL.

#include "abi.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    cld

    mov     $msg, %esi
next_char:
    lodsb
    test    %al, %al
    jz      done
    call    uart_putc
    jmp     next_char

done:
    // EXIT: the VMM stops us here.
    mov     $HC_EXIT, %al
    xor     %bl, %bl
    mov     $HC_PORT, %dx
    out     %al, %dx
halt:
    hlt                             // not reached under a correct VMM
    jmp     halt

// uart_putc: send AL through COM1: wait until the transmit holding register
// is empty (LSR.THRE), then write the byte.  Preserves every register.
uart_putc:
    push    %eax
    push    %edx
    mov     %al, %ah                // keep the byte: IN overwrites AL
    mov     $COM1_LSR, %dx
wait_thre:
    in      %dx, %al
    test    $LSR_THRE, %al
    jz      wait_thre
    mov     %ah, %al
    mov     $COM1_THR, %dx
    out     %al, %dx
    pop     %edx
    pop     %eax
    ret

    .section .rodata
msg:
    .asciz  "Hello from protected mode!\n"

    .bss
    .balign 16
stack:
    .skip   1024
stack_top:
