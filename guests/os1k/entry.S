/* The 1K OS kernel's assembly: entry from the VMM, the interrupt and
 * exception stubs, the common trap path, and the context switch. */

        .section .text.entry, "ax"
        .globl _start
/* ABI.md's --paging machine enters here at 0x80001000 with paging on and
 * every general register 0, ESP included: set up a stack before any call. */
_start:
        mov     $boot_stack + 4096, %esp
        cld
        /* The flat image carries no .bss; the memory is not ours to trust. */
        mov     $__bss_start, %edi
        mov     $_end, %ecx
        sub     %edi, %ecx
        xor     %eax, %eax
        rep stosb
        call    kmain
1:      cli
        hlt
        jmp     1b

        .text
/* One 16-byte stub per vector, so the kernel finds stub n at vectors+16*n.
 * The CPU pushes an error code for some exceptions only; the others push a
 * 0 so every trap frame has the same layout. */
        .balign 16
        .globl  vectors
vectors:
        .set    n, 0
        .rept   256
        .balign 16
        .ifeq   (n == 8) || (n >= 10 && n <= 14) || (n == 17) || (n == 21) || (n == 29) || (n == 30)
        pushl   $0
        .endif
        pushl   $n
        jmp     alltraps
        .set    n, n + 1
        .endr

/* Save what the C code may clobber, switch to the kernel's data segments
 * (user code may have loaded any selector, even null), and hand trap() a
 * pointer to the frame (struct frame in kernel.c). */
alltraps:
        push    %ds
        push    %es
        pusha
        mov     $0x10, %ax
        mov     %ax, %ds
        mov     %ax, %es
        cld                     /* the C ABI wants DF=0; user code may set it */
        push    %esp
        call    trap
        add     $4, %esp
/* A new process starts here too: its kernel stack is built to look as if it
 * had trapped from user mode, so this path "returns" into ring 3. */
        .globl  trapret
trapret:
        popa
        pop     %es
        pop     %ds
        add     $8, %esp        /* vector number and error code */
        iret

/* void swtch(u32 *save_esp, u32 next_esp): save the callee-saved registers
 * on this kernel stack, park its pointer, and resume the other stack where
 * its own swtch call left it (or at trapret for a new process). */
        .globl  swtch
swtch:
        mov     4(%esp), %eax
        mov     8(%esp), %edx
        push    %ebp
        push    %ebx
        push    %esi
        push    %edi
        mov     %esp, (%eax)
        mov     %edx, %esp
        pop     %edi
        pop     %esi
        pop     %ebx
        pop     %ebp
        ret

/* The user programs, built and linked at USER_BASE by the Makefile; spawn()
 * copies them into each new process's own pages. */
        .section .rodata
        .balign 16
        .globl  user_image, user_image_end
user_image:
        .incbin "os1k_user.bin"
user_image_end:

        .bss
        .balign 16
boot_stack:
        .skip   4096
