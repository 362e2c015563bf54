// exc_df - a #GP that cannot be delivered becomes a double fault.
//
// Mode: 32-bit protected mode, no paging, own GDT/IDT/TSS (exc.h).
// The #GP gate is not present (P = 0); the #DF gate is a normal interrupt
// gate, and every other vector (#NP included) has the "unexpected" stub.
// Loading DS with selector 0x80, beyond the GDT limit, raises #GP(0x80).
// Delivering it reads a not-present gate: #NP(13*8+2).  SDM vol. 3A
// Table 6-5: #GP and #NP are both contributory, so the processor delivers
// #DF with error code 0 instead of the #NP.
//
// Output:
//   df vec=00000008 err=00000000 frame=00000010
//     frame = bytes the CPU pushed (error code, EIP, CS, EFLAGS; no stack
//     switch).  The saved CS:EIP of a #DF are undefined (SDM: abort), so
//     they are not printed.
// then EXIT from the handler.  "unexpected vec=0000000b" would mean the #NP
// was delivered instead of #DF.

#define EXC_PROT
#include "exc.h"

    .code32
    .text
    .globl _start
_start:
    SETUP
    GATE    8, df_handler, GATE_INT0
    GATE    13, unexpected, GATE_ABSENT     // P = 0

    mov     %esp, esp_before
    mov     $0x80, %ax                      // index 16: beyond the 6-entry GDT
    .globl  df_insn
df_insn:
    mov     %ax, %ds
    TEXT    "no fault"
    NEWLINE
    EXIT

df_handler:
    mov     %esp, %ebp
    TEXT    "df"
    mov     $8, %eax
    FIELD   vec
    mov     0(%ebp), %eax
    FIELD   err
    mov     esp_before, %eax
    sub     %ebp, %eax
    FIELD   frame
    NEWLINE
    EXIT

    .data
esp_before: .long 0

    EXC_LIB
