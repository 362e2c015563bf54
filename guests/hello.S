// hello - prints "Hello, KVM!\n" through the PUTCHAR hypercall.
//
// Mode: real mode, loaded at physical 0, entered at 0:0.
// Output: Hello, KVM!<newline>
// Ends: HLT (interrupts are off).

#include "abi.h"

    .code16
    .text
    .globl _start
_start:
    // Address our data through CS: the image is linked at offset 0 of
    // whatever segment it runs in, so DS must equal CS for msg to be found.
    mov     %cs, %ax
    mov     %ax, %ds
    cld                             // LODSB walks the string upwards

    mov     $msg, %si
next_char:
    lodsb                           // AL = [DS:SI++]
    test    %al, %al                // the NUL ends the string
    jz      done
    // PUTCHAR takes the byte in BL and the hypercall number in AL.
    mov     %al, %bl
    mov     $HC_PUTCHAR, %al
    mov     $HC_PORT, %dx           // port > 0xFF: must go through DX
    out     %al, %dx
    jmp     next_char

done:
    hlt
    jmp     done                    // never resumed with IF=0; halt again if it is

    .section .rodata
msg:
    .asciz  "Hello, KVM!\n"
