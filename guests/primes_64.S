// primes_64 - a tiny ring-0 kernel that runs a prime sieve in ring 3.
//
// Mode: 64-bit long mode.  Loaded at physical 0x1000 and entered there at
// CPL0 (CS = 0x08), IF = 0.  It relies on nothing else of the VMM's entry
// state: it builds and loads its own page tables, GDT, TSS and IDT, and its
// own stacks, all inside its image and .bss (0x1000 up to 0x8068).
// Output: primes below 1000000: 78498, sum 37550402023<newline>
// Ends: the user task's exit system call, which the kernel turns into the
// EXIT hypercall.
//
// Why the split: on some hosts KVM emulates every CPL0 instruction (slow)
// while CPL3 code runs natively, so the kernel here is as short as it can be
// and the real work - one million bytes of sieve - runs in user mode.
//
// Memory used (physical = virtual, identity-mapped):
//   0x1000         this image: code, then the GDT (.data)
//   0x2000-0x8067  .bss: PML4, PDPT, PD, IDT, kernel stack, user stack, TSS
//   0x100000       the sieve: one byte per number, 0..999999 (~0.95 MiB)
// Guest RAM must be at least 2 MiB; the page tables map the first 4 MiB.
//
// The system call interface, `int $0x80` from ring 3:
//   RAX = 1 (write): print the byte in the low 8 bits of RDI.
//   RAX = 0 (exit):  stop the machine.
//   any other RAX:   returns RAX = -1.
//   Every register except RAX is preserved; write preserves RAX too.
// The kernel also accepts the call arriving as #UD at the int instruction,
// which is how the kvm-pvm host delivers it (see ud_entry).

#include "abi.h"

// Segment selectors, in the order of the GDT below.
#define KERNEL_CS   0x08
#define KERNEL_DS   0x10
#define USER_CS     0x18
#define USER_DS     0x20
#define TSS_SEL     0x28
#define RPL3        3               /* requested privilege level of a ring-3 selector */

// Page-table entry bits.
#define PTE_P       0x001           /* present                       */
#define PTE_W       0x002           /* writable                      */
#define PTE_U       0x004           /* user (ring 3) may access      */
#define PTE_PS      0x080           /* in a PD entry: a 2 MiB page   */
#define PAGE_2M     0x200000
#define MAPPED_2M   2               /* map 2 x 2 MiB = the first 4 MiB */

// CR4 bits we must not inherit: SMEP/SMAP would fault the kernel on its own
// user-accessible pages; PGE could keep the VMM's global TLB entries (with
// different U bits) alive across our CR3 switch.
#define CR4_PGE     (1 << 7)
#define CR4_SMEP    (1 << 20)
#define CR4_SMAP    (1 << 21)

// 64-bit TSS: RSP0 at offset 4; I/O map base at offset 102.
#define TSS_SIZE    104
#define TSS_RSP0    4
#define TSS_IOMAP   102

#define IDT_ENTRIES     256
#define SYSCALL_VECTOR  0x80
#define VECTOR_UD       6           /* invalid opcode */
#define GATE_DPL3       0xEE00      /* present, DPL 3, type 0xE: 64-bit interrupt gate
                                       (IF stays 0 in the handler) */
#define GATE_DPL0       0x8E00      /* the same with DPL 0 */
#define INT80_OPCODE    0x80CD      /* the bytes CD 80 of int $0x80, as a little-endian word */
#define RFLAGS_USER     0x002       /* bit 1 is always 1; IF = 0, IOPL = 0 */

#define SYS_EXIT    0
#define SYS_WRITE   1

// The sieve.
#define SIEVE_BASE  0x100000
#define SIEVE_N     1000000

    .code64
    .text
    .globl _start
_start:
    cld

// ---- 0. zero .bss: tables and TSS must start out all zero -----------------
    lea     __bss_start(%rip), %rdi
    lea     __bss_end(%rip), %rcx
    sub     %rdi, %rcx
    shr     $3, %rcx                // .bss is a whole number of quadwords
    xor     %eax, %eax
    rep stosq
    lea     kstack_top(%rip), %rsp

// ---- 1. page tables: identity map of 4 MiB, every level user-accessible ---
    lea     pdpt(%rip), %rax
    or      $(PTE_P | PTE_W | PTE_U), %rax
    mov     %rax, pml4(%rip)        // PML4[0] -> PDPT: virtual 0..512 GiB
    lea     pd(%rip), %rax
    or      $(PTE_P | PTE_W | PTE_U), %rax
    mov     %rax, pdpt(%rip)        // PDPT[0] -> PD: virtual 0..1 GiB
    lea     pd(%rip), %rdi
    mov     $(PTE_P | PTE_W | PTE_U | PTE_PS), %eax   // 2 MiB page at physical 0
    mov     $MAPPED_2M, %ecx
map_2m:
    mov     %rax, (%rdi)            // PD[n] -> physical n * 2 MiB
    add     $PAGE_2M, %rax
    add     $8, %rdi
    loop    map_2m

    mov     %cr4, %rax              // drop SMEP/SMAP/PGE if the VMM set them
    test    $(CR4_PGE | CR4_SMEP | CR4_SMAP), %eax
    jz      switch_cr3
    and     $~(CR4_PGE | CR4_SMEP | CR4_SMAP), %rax
    mov     %rax, %cr4
switch_cr3:
    lea     pml4(%rip), %rax        // same mapping for our code, so the next
    mov     %rax, %cr3              // instruction is fetched just the same

// ---- 2. GDT with a TSS descriptor, then reload every segment --------------
    // The TSS base is scattered over four fields of its 16-byte descriptor
    // and is only known at link time, so the descriptor is assembled here.
    lea     tss(%rip), %rax         // RAX = base
    mov     $(TSS_SIZE - 1), %edx   // limit[15:0]; limit[19:16] stays 0
    mov     %eax, %ecx
    and     $0xFFFFFF, %ecx
    shl     $16, %rcx
    or      %rcx, %rdx              // base[23:0]  -> bits 16..39
    mov     $0x89, %ecx             // present, DPL 0, type 9 = available 64-bit TSS
    shl     $40, %rcx
    or      %rcx, %rdx              // access byte -> bits 40..47
    mov     %eax, %ecx
    shr     $24, %ecx
    shl     $56, %rcx
    or      %rcx, %rdx              // base[31:24] -> bits 56..63
    mov     %rdx, gdt_tss(%rip)
    shr     $32, %rax
    mov     %rax, gdt_tss+8(%rip)   // base[63:32]; the rest of the upper half is 0

    lgdt    gdtr(%rip)
    pushq   $KERNEL_CS              // a far return is the way to reload CS
    lea     reload_cs(%rip), %rax   // in 64-bit mode
    push    %rax
    lretq
reload_cs:
    mov     $KERNEL_DS, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    mov     %ax, %fs
    mov     %ax, %gs

// ---- 3. TSS: the stack the CPU switches to on int $0x80 from ring 3 --------
    lea     kstack_top(%rip), %rax
    mov     %rax, tss+TSS_RSP0(%rip)
    // I/O map base at the limit: no I/O permission bitmap, so ring 3 (IOPL 0)
    // cannot touch any port and has to ask the kernel.
    movw    $TSS_SIZE, tss+TSS_IOMAP(%rip)
    mov     $TSS_SEL, %ax
    ltr     %ax

// ---- 4. IDT: the system call gate, plus #UD for hosts that need it ---------
    // Every other gate stays zero (not present): any other fault ends the
    // guest with a triple fault, which the VMM reports with the faulting state.
    mov     $SYSCALL_VECTOR, %edi
    lea     syscall_entry(%rip), %rsi
    mov     $GATE_DPL3, %edx        // int $0x80 is allowed from ring 3
    call    set_gate
    mov     $VECTOR_UD, %edi
    lea     ud_entry(%rip), %rsi
    mov     $GATE_DPL0, %edx        // exceptions ignore the gate's DPL
    call    set_gate
    lidt    idtr(%rip)

// ---- 5. drop to ring 3: IRETQ pops RIP, CS, RFLAGS, RSP, SS ----------------
    pushq   $(USER_DS | RPL3)       // SS
    lea     ustack_top(%rip), %rax
    push    %rax                    // RSP
    pushq   $RFLAGS_USER            // RFLAGS: interrupts stay off
    pushq   $(USER_CS | RPL3)       // CS: CPL becomes 3
    lea     user_main(%rip), %rax
    push    %rax                    // RIP
    iretq

// set_gate: IDT[EDI] = 64-bit interrupt gate to RSI in the kernel code
// segment, with the type/attribute word DX.  Clobbers RAX and RDI.
set_gate:
    shl     $4, %rdi                // 16 bytes per gate
    lea     idt(%rip), %rax
    add     %rax, %rdi
    mov     %rsi, %rax
    mov     %ax, (%rdi)             // offset[15:0]
    movw    $KERNEL_CS, 2(%rdi)     // selector
    mov     %dx, 4(%rdi)            // IST 0, then P / DPL / type
    shr     $16, %rax
    mov     %ax, 6(%rdi)            // offset[31:16]
    shr     $16, %rax
    mov     %eax, 8(%rdi)           // offset[63:32]; bytes 12..15 stay 0
    ret

// ---- #UD: int $0x80 arriving as an invalid-opcode fault (ring 0) ---------
// Measured on the kvm-pvm host (DESIGN.md), where ring-3 code runs natively:
// every `int n` executed in ring 3 is delivered to the guest as #UD, with RIP
// still at the int instruction.  So a #UD whose RIP points at the two bytes
// of `int $0x80` is that system call: step over it, as a real software
// interrupt would have, and handle it.  On other CPUs this never runs.
ud_entry:
    push    %rbx
    mov     8(%rsp), %rbx           // the faulting RIP (no error code for #UD)
    cmpw    $INT80_OPCODE, (%rbx)
    jne     ud_genuine
    addq    $2, 8(%rsp)             // return past the int
    pop     %rbx
    jmp     syscall_entry
ud_genuine:
    // A real invalid opcode.  Take every gate away and return to it: the
    // fault repeats, cannot be delivered, and the VMM reports a triple fault
    // with the registers of the faulting instruction itself.
    pop     %rbx
    lidt    null_idtr(%rip)
    iretq

// ---- the system call handler (ring 0) -------------------------------------
// Entered through the IDT gate on the kernel stack (TSS.RSP0) with the user
// RIP, CS, RFLAGS, RSP, SS pushed by the CPU.  Kept minimal: on some hosts
// every instruction here is emulated.
syscall_entry:
    push    %rbx
    push    %rdx
    cmp     $SYS_WRITE, %rax
    je      sys_write
    cmp     $SYS_EXIT, %rax
    je      sys_exit
    mov     $-1, %rax               // unknown system call
    jmp     sys_return
sys_write:
    push    %rax
    mov     %edi, %ebx              // BL = the byte to print
    mov     $HC_PUTCHAR, %eax
    mov     $HC_PORT, %edx
    out     %al, %dx
    pop     %rax
sys_return:
    pop     %rdx
    pop     %rbx
    iretq                           // back to ring 3, user stack restored
sys_exit:
    mov     $HC_EXIT, %eax
    xor     %ebx, %ebx
    mov     $HC_PORT, %edx
    out     %al, %dx                // the VMM stops us here
sys_halt:
    hlt                             // not reached under a correct VMM
    jmp     sys_halt

// ===========================================================================
// Everything below runs in ring 3.  Its only way out is int $0x80.
// ===========================================================================

    .globl  user_main
user_main:
    mov     $SIEVE_BASE, %r8d       // R8 = &a[0]; a[i] != 0: "i may be prime"

// ---- sieve of Eratosthenes over 0 .. N-1 ----------------------------------
    mov     %r8, %rdi               // every number starts as a candidate...
    mov     $SIEVE_N, %ecx
    mov     $1, %al
    rep stosb
    movb    $0, (%r8)               // ...except 0 and 1
    movb    $0, 1(%r8)

    mov     $2, %ebx                // RBX = p
sieve_p:
    mov     %rbx, %rax
    imul    %rbx, %rax              // RAX = p * p: smaller multiples of p were
    cmp     $SIEVE_N, %rax          // already crossed out by smaller primes,
    jae     sieve_done              // and once p*p >= N nothing is left to do
    cmpb    $0, (%r8,%rbx)
    je      sieve_next              // p is composite: its multiples are done
sieve_cross:
    movb    $0, (%r8,%rax)          // cross out p*p, p*p + p, ...
    add     %rbx, %rax
    cmp     $SIEVE_N, %rax
    jb      sieve_cross
sieve_next:
    inc     %rbx
    jmp     sieve_p
sieve_done:

// ---- count and sum the survivors (the sum needs 64 bits) ------------------
    xor     %r12d, %r12d            // R12 = how many primes
    xor     %r13d, %r13d            // R13 = their sum
    xor     %eax, %eax              // RAX = i
tally:
    cmpb    $0, (%r8,%rax)
    je      tally_next
    inc     %r12
    add     %rax, %r13
tally_next:
    inc     %rax
    cmp     $SIEVE_N, %rax
    jb      tally

// ---- report: "primes below N: COUNT, sum SUM\n" ---------------------------
    lea     msg_head(%rip), %rsi
    call    u_puts
    mov     $SIEVE_N, %eax
    call    u_print_dec
    lea     msg_count(%rip), %rsi
    call    u_puts
    mov     %r12, %rax
    call    u_print_dec
    lea     msg_sum(%rip), %rsi
    call    u_puts
    mov     %r13, %rax
    call    u_print_dec
    mov     $'\n', %edi
    call    u_putchar

    mov     $SYS_EXIT, %eax
    int     $SYSCALL_VECTOR
user_hang:
    jmp     user_hang               // exit does not return

// u_putchar: print the byte in DIL with the write system call.
// Preserves every register.
u_putchar:
    push    %rax
    mov     $SYS_WRITE, %eax
    int     $SYSCALL_VECTOR
    pop     %rax
    ret

// u_puts: print the NUL-terminated string at RSI.  Preserves every register.
u_puts:
    push    %rax
    push    %rsi
    push    %rdi
u_puts_next:
    lodsb
    test    %al, %al
    jz      u_puts_done
    movzbl  %al, %edi
    call    u_putchar
    jmp     u_puts_next
u_puts_done:
    pop     %rdi
    pop     %rsi
    pop     %rax
    ret

// u_print_dec: print RAX as an unsigned decimal number.  Preserves every
// register.  Division yields the digits least significant first, so they
// are pushed and then popped back in printing order.
u_print_dec:
    push    %rax
    push    %rbx
    push    %rcx
    push    %rdx
    push    %rdi
    mov     $10, %ebx
    xor     %ecx, %ecx              // RCX = number of digits pushed
u_split:
    xor     %edx, %edx
    div     %rbx                    // RAX = RDX:RAX / 10, RDX = the last digit
    push    %rdx
    inc     %ecx
    test    %rax, %rax
    jnz     u_split
u_emit:
    pop     %rdi
    add     $'0', %edi
    call    u_putchar
    loop    u_emit
    pop     %rdi
    pop     %rdx
    pop     %rcx
    pop     %rbx
    pop     %rax
    ret

    .section .rodata
msg_head:
    .asciz  "primes below "
msg_count:
    .asciz  ": "
msg_sum:
    .asciz  ", sum "

// ---- descriptor tables -----------------------------------------------------
    .data
    .balign 8
gdt:
    .quad   0                       // 0x00 null
    .quad   0x00AF9A000000FFFF      // 0x08 kernel code: 64-bit (L=1), DPL 0
    .quad   0x00CF92000000FFFF      // 0x10 kernel data: writable, DPL 0
    .quad   0x00AFFA000000FFFF      // 0x18 user code: 64-bit (L=1), DPL 3
    .quad   0x00CFF2000000FFFF      // 0x20 user data: writable, DPL 3
gdt_tss:
    .quad   0, 0                    // 0x28 TSS: 16 bytes, filled in at run time
gdt_end:

gdtr:
    .word   gdt_end - gdt - 1
    .quad   gdt
idtr:
    .word   IDT_ENTRIES * 16 - 1
    .quad   idt
null_idtr:                          // no gates at all (see ud_genuine)
    .word   0
    .quad   0

// ---- zeroed at start-up by _start ------------------------------------------
    .bss
    .balign 4096                    // page tables must be 4 KiB aligned
pml4:   .skip 4096
pdpt:   .skip 4096
pd:     .skip 4096
idt:    .skip IDT_ENTRIES * 16
kstack: .skip 4096                  // ring 0: start-up, then every int $0x80
kstack_top:
ustack: .skip 4096                  // ring 3
ustack_top:
    .balign 16
tss:    .skip TSS_SIZE
    .balign 8                       // keep .bss a whole number of quadwords
