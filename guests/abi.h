/*
 * abi.h - the guest-visible contract of minikvm, as named constants.
 *
 * Every guest includes this so that a port number or a hypercall number is
 * written down exactly once.  The authoritative description is ABI.md; this
 * header only gives its numbers names.  It is read by the C preprocessor
 * before the assembler sees the guest, so keep it to #define lines.
 */
#ifndef MINIKVM_GUEST_ABI_H
#define MINIKVM_GUEST_ABI_H

/* Hypercalls: AL = number, BL = argument, then OUT to HC_PORT.  The port is
 * above 0xFF, so it can only be reached through DX (OUT imm8 stops at 0xFF). */
#define HC_PORT     0x500
#define HC_EXIT     0       /* stop this guest cleanly                      */
#define HC_PUTCHAR  1       /* write the byte in BL to the console          */
#define HC_GETCHAR  2       /* request a byte; read it with IN AL from HC_PORT */

/* COM1, a 16550 UART.  A polling driver waits for "transmit holding register
 * empty" in the line status register, then writes the byte. */
#define COM1_BASE   0x3F8
#define COM1_THR    (COM1_BASE + 0)     /* transmit holding register (DLAB=0) */
#define COM1_LSR    (COM1_BASE + 5)     /* line status register               */
#define LSR_THRE    0x20                /* THR empty: ready for the next byte  */

#endif
