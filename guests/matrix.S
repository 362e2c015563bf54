// matrix - multiplies two 8x8 integer matrices and prints the product.
//
// Mode: real mode, loaded at physical 0, entered at 0:0.
// Computes C = A x B with, for i, j = 0..7,
//     A[i][j] = i + j + 1
//     B[i][j] = (i*8 + j) mod 7
// and prints, through the PUTCHAR hypercall:
//     Matrix C = A x B (8x8):<newline>
//     8 lines: row i of C, decimal, single spaces between values<newline>
//     trace = <sum of C[i][i]><newline>
// Ends: the EXIT hypercall.
//
// Every entry is at most 8 * 15 * 6 = 720 and the trace is below 8 * 720, so
// 16-bit words hold everything.  Matrices are row-major arrays of words.
// Loop counters live in memory (i, j, k) rather than in registers, because
// MUL and DIV claim AX and DX and 16-bit addressing only indexes with BX, SI
// and DI; the loops read like the formulas that way.  Speed does not matter.

#include "real16.h"

#define N 8                         /* matrix order */

    .code16
    .text
    .globl _start
_start:
    // DS must equal CS for our data: the image is linked at offset 0.
    mov     %cs, %ax
    mov     %ax, %ds
    cld

// ---- 1. fill A and B ------------------------------------------------------
    movw    $0, i
fill_row:
    movw    $0, j
fill_col:
    mov     i, %ax
    mov     j, %dx
    call    offset_of               // BX = byte offset of element [i][j]

    mov     i, %ax                  // A[i][j] = i + j + 1
    add     j, %ax
    inc     %ax
    mov     %ax, mat_a(%bx)

    mov     %bx, %ax                // B[i][j] = (i*8 + j) mod 7, and i*8 + j
    shr     $1, %ax                 // is just the word index BX / 2
    xor     %dx, %dx
    mov     $7, %cx
    div     %cx                     // DX = remainder
    mov     %dx, mat_b(%bx)

    incw    j
    cmpw    $N, j
    jb      fill_col
    incw    i
    cmpw    $N, i
    jb      fill_row

// ---- 2. C[i][j] = sum over k of A[i][k] * B[k][j] -------------------------
    movw    $0, i
mul_row:
    movw    $0, j
mul_col:
    xor     %cx, %cx                // CX = the running sum for C[i][j]
    movw    $0, k
mul_k:
    mov     k, %ax
    mov     j, %dx
    call    offset_of
    mov     %bx, %si                // SI -> B[k][j]
    mov     i, %ax
    mov     k, %dx
    call    offset_of               // BX -> A[i][k]
    mov     mat_a(%bx), %ax
    mulw    mat_b(%si)              // DX:AX = A[i][k] * B[k][j]  (DX = 0 here)
    add     %ax, %cx
    incw    k
    cmpw    $N, k
    jb      mul_k

    mov     i, %ax
    mov     j, %dx
    call    offset_of
    mov     %cx, mat_c(%bx)
    incw    j
    cmpw    $N, j
    jb      mul_col
    incw    i
    cmpw    $N, i
    jb      mul_row

// ---- 3. print C, one row per line -----------------------------------------
    mov     $title, %si
    call    puts
    movw    $0, i
print_row:
    movw    $0, j
print_col:
    cmpw    $0, j                   // a space before every value but the first
    je      print_value
    mov     $' ', %al
    call    putchar
print_value:
    mov     i, %ax
    mov     j, %dx
    call    offset_of
    mov     mat_c(%bx), %ax
    call    print_dec
    incw    j
    cmpw    $N, j
    jb      print_col
    mov     $'\n', %al
    call    putchar
    incw    i
    cmpw    $N, i
    jb      print_row

// ---- 4. the trace: C[0][0] + C[1][1] + ... + C[7][7] ----------------------
    xor     %cx, %cx                // CX = trace
    movw    $0, i
trace_next:
    mov     i, %ax
    mov     %ax, %dx                // element [i][i]
    call    offset_of
    add     mat_c(%bx), %cx
    incw    i
    cmpw    $N, i
    jb      trace_next

    mov     $trace_label, %si
    call    puts
    mov     %cx, %ax
    call    print_dec
    mov     $'\n', %al
    call    putchar

    // EXIT: the VMM stops us here.
    mov     $HC_EXIT, %al
    xor     %bl, %bl
    mov     $HC_PORT, %dx
    out     %al, %dx
halt:
    hlt                             // not reached under a correct VMM
    jmp     halt

// offset_of: BX = byte offset of element [AX][DX] of an NxN word matrix,
// that is (AX * N + DX) * 2.  Changes only BX.
offset_of:
    mov     %ax, %bx
    shl     $3, %bx                 // * N (N = 8)
    add     %dx, %bx
    shl     $1, %bx                 // * 2 bytes per word
    ret

// The console routines (real16.h).
    PUTS putchar
    PRINT_DEC putchar
    PUTCHAR_HYPERCALL

    .section .rodata
title:
    .asciz  "Matrix C = A x B (8x8):\n"
trace_label:
    .asciz  "trace = "

// Everything below is written before it is read, so it needs no zeroing.
    .bss
    .balign 2
i:      .skip 2
j:      .skip 2
k:      .skip 2
mat_a:  .skip N * N * 2
mat_b:  .skip N * N * 2
mat_c:  .skip N * N * 2
