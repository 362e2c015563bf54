// exc_irq0 - IRQ 0 from the 8254 PIT through the 8259A PIC, 50 ticks at 100 Hz.
//
// Mode: 32-bit protected mode, no paging, own GDT/IDT/TSS (exc.h).
// Needs the machine's interrupt controller and timer (--interrupts).
// The guest remaps the master PIC to vectors 0x20-0x27 (the slave to
// 0x28-0x2F), unmasks only IRQ 0, programs PIT channel 0 as a rate
// generator (mode 2) with divisor 11932 (1193182 Hz / 11932 = 100 Hz), and
// waits with STI; HLT.  The handler (an interrupt gate at vector 0x20)
// counts, keeps the frame of the first tick, sends EOI, and after the 50th
// tick masks IRQ 0 so that the count stops at exactly 50.
//
// Output (SDM vol. 3A 6.12.1: an external interrupt pushes EIP of the next
// instruction, here the one after the HLT it woke, and EFLAGS as they were:
// IF = 1, RF = 0):
//   irq0 ticks=00000032 eip=<irq0_after_hlt> cs=00000008 eflags=00000202 hflags=00000002
//     hflags = the handler's EFLAGS at the first tick (IF cleared by the gate)

#define EXC_PROT
#include "exc.h"

#define PIC1_CMD    0x20
#define PIC1_DATA   0x21
#define PIC2_CMD    0xA0
#define PIC2_DATA   0xA1
#define PIC_EOI     0x20
#define PIT_CH0     0x40
#define PIT_CMD     0x43
#define PIT_DIVISOR 11932       /* 100 Hz */
#define TICKS       50

    .code32
    .text
    .globl _start
_start:
    SETUP
    GATE    0x20, irq0_handler, GATE_INT0

    // 8259A: ICW1 (edge, cascade, ICW4), ICW2 (vector base), ICW3 (wiring), ICW4 (8086)
    mov     $0x11, %al
    out     %al, $PIC1_CMD
    out     %al, $PIC2_CMD
    mov     $0x20, %al
    out     %al, $PIC1_DATA
    mov     $0x28, %al
    out     %al, $PIC2_DATA
    mov     $0x04, %al
    out     %al, $PIC1_DATA
    mov     $0x02, %al
    out     %al, $PIC2_DATA
    mov     $0x01, %al
    out     %al, $PIC1_DATA
    out     %al, $PIC2_DATA
    mov     $0xFE, %al                  // only IRQ 0
    out     %al, $PIC1_DATA
    mov     $0xFF, %al
    out     %al, $PIC2_DATA

    // 8254: channel 0, lobyte/hibyte, mode 2, binary
    mov     $0x34, %al
    out     %al, $PIT_CMD
    mov     $(PIT_DIVISOR & 0xFF), %al
    out     %al, $PIT_CH0
    mov     $(PIT_DIVISOR >> 8), %al
    out     %al, $PIT_CH0

    SET_FLAGS
    sti
wait_tick:
    hlt
    .globl  irq0_after_hlt
irq0_after_hlt:
    cmpl    $TICKS, ticks
    jb      wait_tick
    cli

    TEXT    "irq0"
    mov     ticks, %eax
    FIELD   ticks
    mov     first_eip, %eax
    FIELD   eip
    mov     first_cs, %eax
    FIELD   cs
    mov     first_eflags, %eax
    FIELD   eflags
    mov     first_hflags, %eax
    FIELD   hflags
    NEWLINE
    EXIT

irq0_handler:
    pushf
    pop     last_hflags
    push    %eax
    cmpl    $0, ticks
    jne     1f
    mov     4(%esp), %eax               // the first tick's frame
    mov     %eax, first_eip
    mov     8(%esp), %eax
    mov     %eax, first_cs
    mov     12(%esp), %eax
    mov     %eax, first_eflags
    mov     last_hflags, %eax
    mov     %eax, first_hflags
1:  incl    ticks
    cmpl    $TICKS, ticks
    jb      2f
    mov     $0xFF, %al                  // enough: mask IRQ 0
    out     %al, $PIC1_DATA
2:  mov     $PIC_EOI, %al
    out     %al, $PIC1_CMD
    pop     %eax
    iret

    .data
ticks:        .long 0
first_eip:    .long 0
first_cs:     .long 0
first_eflags: .long 0
first_hflags: .long 0
last_hflags:  .long 0

    EXC_LIB
