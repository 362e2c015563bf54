// exc_real_int - real-mode interrupts through the IVT: INT 0x21 and #DE.
//
// Mode: real mode, loaded at 0 and entered at 0000:0000 (ABI.md).  The IVT
// lives at 0000:0000-03FF, over the guest's own first bytes: the guest jumps
// over that kilobyte first, then owns it.  Every IVT entry points at an
// "unexpected" handler; vectors 0x21 and 0 point at handlers in segment
// 0x0100 (so delivery must load CS from the IVT entry).  The handlers print
// the frame, the CS they run in, and their own FLAGS.
//
// 1. INT 0x21 with FLAGS = 0x0203 (CF, IF): a software interrupt pushes
//    FLAGS, CS and the IP of the next instruction and clears IF, TF, AC.
// 2. DIV CL with CL = 0 and FLAGS = 0x0002: #DE is a fault, the saved IP is
//    the DIV itself; the handler adds 2 to it (DIV CL is two bytes).
// Output:
//   int21 ip=<rint_after> cs=0000 flags=0203 hcs=0100 frame=0006 hflags=0003
//   back flags=0203
//   de ip=<rdiv_insn> cs=0000 flags=0002 hcs=0100 frame=0006 hflags=0002
//   resumed flags=0002 ax=0064

#define EXC_REAL
#include "exc.h"

#define HSEG        0x0100              /* the handlers' code segment */
#define HSEG_BASE   (HSEG << 4)

    .code16
    .text
    .globl _start
_start:
    jmp     main
    .org    0x400                       // the IVT: entries 0-255 are written by main

main:
    cli
    xor     %ax, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    mov     $0x7000, %sp
    cld
    // Every vector to "unexpected", then the two under test.
    xor     %di, %di
1:  movw    $(unexpected - HSEG_BASE), (%di)
    movw    $HSEG, 2(%di)
    add     $4, %di
    cmp     $0x400, %di
    jb      1b
    movw    $(int21_handler - HSEG_BASE), 0x21 * 4
    movw    $HSEG, 0x21 * 4 + 2
    movw    $(de_handler - HSEG_BASE), 0 * 4
    movw    $HSEG, 0 * 4 + 2

    // 1. INT 0x21
    mov     %sp, sp_before
    pushw   $0x0203
    popfw
    .globl  rint_insn
rint_insn:
    int     $0x21
    .globl  rint_after
rint_after:
    pushfw
    popw    %dx
    cli
    TEXT    "back"
    mov     %dx, %ax
    FIELD   flags
    NEWLINE

    // 2. DIV CL by zero
    mov     $100, %ax
    mov     $0, %cl
    mov     %sp, sp_before
    pushw   $0x0002
    popfw
    .globl  rdiv_insn
rdiv_insn:
    div     %cl
    .globl  rdiv_resume
rdiv_resume:
    pushfw
    popw    %dx
    push    %ax
    TEXT    "resumed"
    mov     %dx, %ax
    FIELD   flags
    pop     %ax
    FIELD   ax
    NEWLINE
    EXIT

// From here on the code runs with CS = HSEG (handlers) or CS = 0 (the
// printing routines called from main): everything is above HSEG_BASE, so
// near calls and jumps work from both.
    .org    HSEG_BASE

// show_frame: TAG already printed; BP = the handler's SP at entry.
show_frame:
    mov     0(%bp), %ax
    FIELD   ip
    mov     2(%bp), %ax
    FIELD   cs
    mov     4(%bp), %ax
    FIELD   flags
    mov     %cs, %ax
    FIELD   hcs
    mov     sp_before, %ax
    sub     %bp, %ax
    FIELD   frame
    mov     hflags, %ax
    FIELD   hflags
    NEWLINE
    ret

int21_handler:
    pushfw
    popw    hflags
    push    %ax
    push    %bp
    mov     %sp, %bp
    add     $4, %bp                     // the frame (BP and AX pushed)
    TEXT    "int21"
    call    show_frame
    pop     %bp
    pop     %ax
    iret

de_handler:
    pushfw
    popw    hflags
    push    %ax
    push    %bp
    mov     %sp, %bp
    add     $4, %bp                     // the frame (BP and AX pushed)
    TEXT    "de"
    call    show_frame
    addw    $2, 0(%bp)                  // past DIV CL
    pop     %bp
    pop     %ax
    iret

unexpected:
    mov     %sp, %bp
    TEXT    "unexpected"
    call    show_frame
    EXIT

    EXC_LIB

    .data
sp_before:  .word 0
hflags:     .word 0
