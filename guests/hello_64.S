// hello_64 - a long-mode guest printing through the PUTCHAR hypercall.
//
// Mode: 64-bit long mode.  Loaded at physical 0x1000 and entered there with
// the VMM's identity map, CS = 0x08 (64-bit code), data selectors 0x10,
// RSP = 0x8000, IF = 0.
// Output: Hello from 64-bit!<newline>
// Ends: the EXIT hypercall.
//
// The guest uses no stack and no memory but its own image, so it depends on
// nothing of the entry state except "64-bit code, identity-mapped".

#include "abi.h"

    .code64
    .text
    .globl _start
_start:
    cld
    lea     msg(%rip), %rsi         // position-independent: the string is
                                    // wherever we were loaded, plus a fixed offset
    mov     $HC_PORT, %dx           // port > 0xFF: must go through DX
next_char:
    lodsb
    test    %al, %al
    jz      done
    mov     %al, %bl                // PUTCHAR: byte in BL, number in AL
    mov     $HC_PUTCHAR, %al
    out     %al, %dx
    jmp     next_char

done:
    // EXIT: the VMM stops us here.
    mov     $HC_EXIT, %al
    xor     %bl, %bl
    out     %al, %dx
halt:
    hlt                             // not reached under a correct VMM
    jmp     halt

    .section .rodata
msg:
    .asciz  "Hello from 64-bit!\n"
