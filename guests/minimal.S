// minimal - the smallest possible guest: one HLT and nothing else.
//
// Mode: real mode, loaded at physical 0 and entered at CS:IP = 0:0.
// Output: none.
// Ends: HLT with interrupts off (IF=0 from the VMM's reset state), which the
// VMM reports as a clean stop.  The whole image is the single byte 0xF4, so
// this guest exercises the VMM's load/run/stop path and nothing more.

    .code16
    .text
    .globl _start
_start:
    hlt
