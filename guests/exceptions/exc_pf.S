// exc_pf - three page faults in a row under 32-bit paging (4 KiB pages).
//
// Mode: starts in 32-bit protected mode and turns paging on itself, with
// its own page directory and one page table identity-mapping 0-4 MiB as
// user, writable pages, except three pages:
//   page_np   not present
//   page_ro   present, read-only, supervisor
//   page_sup  present, writable, supervisor only
// CR0.WP = 1, so ring 0 cannot write a read-only page either.
//
// 1. ring 0 reads page_np          -> #PF, error 0x0 (not present, read, supervisor)
// 2. ring 0 writes page_ro         -> #PF, error 0x3 (present, write, supervisor)
// 3. ring 3 reads page_sup         -> #PF, error 0x5 (present, read, user)
// Each time the handler prints the fault, sets P|RW|US in the PTE, INVLPG,
// and IRETs: the instruction is retried and succeeds (the guest prints the
// value it read).  Ring 3 then ends the guest with INT 0x80.
//
// Output (SDM vol. 3A 4.7 and 6.15 "Interrupt 14": CR2 = the linear address,
// the saved EIP is the faulting instruction; a fault pushes RF = 1):
//   pf n=00000001 cr2=<page_np> err=00000000 eip=<pf_read> cs=00000008 eflags=00010002
//   read val=a0a0a0a0
//   pf n=00000002 cr2=<page_ro> err=00000003 eip=<pf_write> cs=00000008 eflags=00010002
//   write val=b1b1b1b1
//   pf n=00000003 cr2=<page_sup> err=00000005 eip=<pf_user> cs=0000001b eflags=00010202 esp=<ustack_top> ss=00000023
//   user val=c0c0c0c0
// Three #PFs in one run: on Unicorn the second one is only reported as #PF
// if the VMM cleared Unicorn's stale old_exception after the first.

#define EXC_PROT
#include "exc.h"

#define PTE_P   0x1
#define PTE_RW  0x2
#define PTE_US  0x4

    .code32
    .text
    .globl _start
_start:
    SETUP
    GATE    14, pf_handler, GATE_INT0
    GATE    0x80, exit_handler, GATE_INT3

    // Known contents, written while paging is still off.
    movl    $0xa0a0a0a0, page_np
    movl    $0xb0b0b0b0, page_ro
    movl    $0xc0c0c0c0, page_sup

    // Page table: identity, user + writable; then the three special pages.
    xor     %ecx, %ecx
1:  mov     %ecx, %eax
    shl     $12, %eax
    or      $(PTE_P | PTE_RW | PTE_US), %eax
    mov     %eax, page_table(,%ecx,4)
    inc     %ecx
    cmp     $1024, %ecx
    jb      1b
    mov     $page_np, %eax
    call    pte_of
    andl    $~PTE_P, (%ebx)
    mov     $page_ro, %eax
    call    pte_of
    andl    $~(PTE_RW | PTE_US), (%ebx)
    mov     $page_sup, %eax
    call    pte_of
    andl    $~PTE_US, (%ebx)
    mov     $page_table, %eax
    or      $(PTE_P | PTE_RW | PTE_US), %eax
    mov     %eax, page_directory

    mov     $page_directory, %eax
    mov     %eax, %cr3
    mov     %cr0, %eax
    or      $0x80010000, %eax           // PG | WP
    mov     %eax, %cr0

    // 1. read a page that is not present
    SET_FLAGS
    .globl  pf_read
pf_read:
    mov     page_np, %edx
    TEXT    "read"
    mov     %edx, %eax
    FIELD   val
    NEWLINE

    // 2. write a read-only page (CR0.WP = 1)
    SET_FLAGS
    .globl  pf_write
pf_write:
    movl    $0xb1b1b1b1, page_ro
    TEXT    "write"
    mov     page_ro, %eax
    FIELD   val
    NEWLINE

    // 3. read a supervisor page from ring 3
    ENTER_RING3 user, 0x202
user:
    mov     $SEL_UDATA, %ax
    mov     %ax, %ds
    mov     %ax, %es
    .globl  pf_user
pf_user:
    mov     page_sup, %ebx
    int     $0x80

// pte_of: EBX = address of the PTE that maps the address in EAX
pte_of:
    shr     $12, %eax
    lea     page_table(,%eax,4), %ebx
    ret

exit_handler:                           // ring 3 is done: EBX holds what it read
    mov     $SEL_KDATA, %ax
    mov     %ax, %ds
    TEXT    "user"
    mov     %ebx, %eax
    FIELD   val
    NEWLINE
    EXIT

pf_handler:
    pusha
    push    %ds
    mov     $SEL_KDATA, %ax
    mov     %ax, %ds
    lea     36(%esp), %ebp              // the frame: error code, EIP, CS, EFLAGS[, ESP, SS]
    incl    pf_count
    TEXT    "pf"
    mov     pf_count, %eax
    FIELD   n
    mov     %cr2, %eax
    FIELD   cr2
    mov     0(%ebp), %eax
    FIELD   err
    mov     4(%ebp), %eax
    FIELD   eip
    mov     8(%ebp), %eax
    FIELD   cs
    mov     12(%ebp), %eax
    FIELD   eflags
    testl   $3, 8(%ebp)
    jz      2f
    mov     16(%ebp), %eax              // from ring 3: the user stack too
    FIELD   esp
    mov     20(%ebp), %eax
    FIELD   ss
2:  NEWLINE
    mov     %cr2, %eax                  // make the page present, writable, user
    call    pte_of
    orl     $(PTE_P | PTE_RW | PTE_US), (%ebx)
    mov     %cr2, %eax
    invlpg  (%eax)
    pop     %ds
    popa
    add     $4, %esp                    // the error code
    iret

    .data
pf_count: .long 0

    .bss
    .balign 4096
page_directory: .skip 4096
page_table:     .skip 4096
    .globl  page_np, page_ro, page_sup
page_np:        .skip 4096
page_ro:        .skip 4096
page_sup:       .skip 4096

    EXC_LIB
