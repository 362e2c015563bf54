// broken_pf_user_super - ring 3 reads a supervisor-only page.
//
// Mode: the --paging layout (32-bit paging, 4 KiB pages, empty IDT).  The
// guest loads its own GDT with a TSS, sets U/S on PDE[512] and on every
// PTE of its page table (so ring 3 can run this image), clears U/S again
// for its page `page_sup`, and IRETs to ring 3, which reads page_sup:
//   #PF(0x5) CR2 = page_sup: protection violation, read, user mode
//   #PF: IDT gate 14 is empty       -> #GP: #PF then #GP make #DF
//   #DF: IDT gate 8 is empty        -> triple fault
// Output: the line below, then the VMM reports a triple fault at
// bad_user_read.  The explainer must name the user/supervisor violation.

#define BROKEN_32
#include "broken.h"

    .code32
    .text
    .globl _start
_start:
    mov     $stack_top, %esp
    SAY     "pf_user_super: ring 3 reads a supervisor page"
    LOAD_GDT_TSS
    call    open_to_ring3
    push    $SEL_UDATA
    push    $ustack_top
    push    $0x2
    push    $SEL_UCODE
    push    $user
    iret

user:
    mov     $SEL_UDATA, %ax
    mov     %ax, %ds
    mov     %ax, %es
    .globl  bad_user_read
bad_user_read:
    mov     page_sup, %eax
    jmp     .

// U/S on the PDE that maps this image and on every PTE of its table,
// except page_sup's; then reload CR3 to drop stale translations.
open_to_ring3:
    mov     $_start, %eax
    PTE_OF                          // ECX: clobbered; EBX: our PTE
    mov     %cr3, %edx
    and     $0xFFFFF000, %edx
    mov     $_start, %ecx
    shr     $22, %ecx
    orl     $PTE_US, (%edx,%ecx,4)  // the PDE
    and     $0xFFFFF000, %ebx       // the page table
    xor     %ecx, %ecx
1:  orl     $PTE_US, (%ebx,%ecx,4)
    inc     %ecx
    cmp     $1024, %ecx
    jb      1b
    mov     $page_sup, %eax
    PTE_OF
    andl    $~PTE_US, (%ebx)
    mov     %cr3, %eax
    mov     %eax, %cr3
    ret

    GDT_WITH_TSS

    .bss
    .balign 4096
    .globl  page_sup
page_sup:
    .skip   4096
    .skip   4096
stack_top:
    .skip   4096
ustack_top:

    BROKEN_LIB
