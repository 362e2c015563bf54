/*
 * broken_sse_trap_kernel.c - the C half of broken_sse_trap (see its .S).
 *
 * Nothing here is wrong as C: it is the start of a typical hobby kernel
 * (the 1K OS clears its .bss exactly like this).  Built with
 * -m32 -O3 -msse2, GCC turns memset's byte loop into SSE code, which only
 * runs once the OS has set CR4.OSFXSR.
 */
#include "abi.h"

typedef unsigned long size_t;

extern char __bss_start[], __bss_end[];

static void hypercall(unsigned char number, unsigned char argument)
{
    __asm__ volatile("outb %%al, %%dx" : : "a"(number), "b"(argument), "d"(HC_PORT));
}

static void puts(const char *s)
{
    while (*s)
        hypercall(HC_PUTCHAR, (unsigned char)*s++);
}

void *memset(void *dst, int c, size_t n);

void *memset(void *dst, int c, size_t n)
{
    unsigned char *p = dst;
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)c;
    return dst;
}

static unsigned counters[1024]; /* some .bss for memset to clear */

void kernel_main(void);

void kernel_main(void)
{
    memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
    counters[0]++;
    puts(counters[0] == 1 ? "sse_trap: kernel up\n" : "sse_trap: .bss not cleared\n");
}
