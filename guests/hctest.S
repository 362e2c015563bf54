// hctest - prints "Hello!\n", then issues a hypercall number that does not
// exist, to check that the VMM stops the guest and says why.
//
// Mode: real mode, loaded at physical 0, entered at 0:0.
// Output: Hello!<newline>
// Ends: hypercall 0x7F (retired/unknown) at the OUT labelled bad_hypercall.
// The original Mini-KVM stopped silently there; minikvm must stop with a
// message naming the number 0x7f and this guest address.

#include "abi.h"

#define HC_RETIRED 0x7F             /* not a hypercall of ABI.md */

    .code16
    .text
    .globl _start
_start:
    // DS must equal CS for the string: the image is linked at offset 0.
    mov     %cs, %ax
    mov     %ax, %ds
    cld

    mov     $msg, %si
next_char:
    lodsb
    test    %al, %al
    jz      unknown
    mov     %al, %bl                // PUTCHAR: byte in BL, number in AL
    mov     $HC_PUTCHAR, %al
    mov     $HC_PORT, %dx
    out     %al, %dx
    jmp     next_char

unknown:
    mov     $HC_RETIRED, %al
    xor     %bl, %bl
    mov     $HC_PORT, %dx
    .globl  bad_hypercall           // global so the debugger and tests can find it
bad_hypercall:
    out     %al, %dx                // the VMM stops the guest here
halt:
    hlt                             // only reached if the VMM ignores the number
    jmp     halt

    .section .rodata
msg:
    .asciz  "Hello!\n"
