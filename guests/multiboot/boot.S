// boot.S - the multiboot header and entry point of the test kernel.
//
// Assembled twice: as is for the ELF kernel (mb_hello.elf), where the loader
// takes the load addresses from the ELF program headers, and with -DKLUDGE
// for the flat binary (mb_kludge.bin), where header flag 16 (the "a.out
// kludge") makes the header itself say where the image goes.
//
// The loader enters _start in 32-bit protected mode, paging off, IF = 0,
// with EAX = 0x2BADB002 and EBX = the physical address of the multiboot
// information structure.  Nothing promises a usable stack, so the kernel
// sets its own before the first call.

#define MB_HEADER_MAGIC   0x1BADB002
#define MB_PAGE_ALIGN     (1 << 0)      // modules on page boundaries (we have none)
#define MB_MEMORY_INFO    (1 << 1)      // we want mem_lower/mem_upper and the map
#define MB_AOUT_KLUDGE    (1 << 16)     // the address fields below are valid

#ifdef KLUDGE
#define MB_FLAGS (MB_PAGE_ALIGN | MB_MEMORY_INFO | MB_AOUT_KLUDGE)
#else
#define MB_FLAGS (MB_PAGE_ALIGN | MB_MEMORY_INFO)
#endif

    .section .multiboot, "a"
    .balign 4
mb_header:
    .long   MB_HEADER_MAGIC
    .long   MB_FLAGS
    .long   -(MB_HEADER_MAGIC + MB_FLAGS)   // magic + flags + checksum = 0
#ifdef KLUDGE
    .long   mb_header           // header_addr: where these bytes land
    .long   __image_start       // load_addr: the first byte of the file goes here
    .long   __load_end          // load_end_addr: end of .data, end of the file
    .long   __bss_end           // bss_end_addr: the loader zeroes up to here
    .long   _start              // entry_addr
#endif

    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    cld
    push    %ebx                // kmain(magic, info)
    push    %eax
    call    kmain
    cli
halt:
    hlt
    jmp     halt                // an NMI would resume after HLT: halt again

    .section .rodata
    .globl boot_variant
boot_variant:
#ifdef KLUDGE
    .asciz  "a.out kludge"
#else
    .asciz  "ELF"
#endif

    .bss
    .balign 16
stack:
    .skip   16384
stack_top:

    .section .note.GNU-stack, "", @progbits
