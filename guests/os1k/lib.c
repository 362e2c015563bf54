/* Helpers both the kernel and the user programs link (there is no libc).
 * GCC may call memset/memcpy on its own for struct copies and zeroing, so
 * they must exist under these names; the Makefile passes
 * -fno-tree-loop-distribute-patterns so these loops are not turned back
 * into calls to themselves. */
#include "os1k.h"

void *memset(void *d, int c, u32 n)
{
    u8 *p = d;
    while (n--)
        *p++ = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, u32 n)
{
    u8 *p = d;
    const u8 *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

/* A small printf: %d %u %x %s %c %%, with an optional '-' (left-justify),
 * '0' (zero padding) and a width. Output goes through put(c, arg) so the
 * kernel can send it to the UART and a user program to a buffer. */
void vfmt(void (*put)(int c, void *arg), void *arg, const char *f, va_list ap)
{
    for (; *f; f++) {
        if (*f != '%') {
            put(*f, arg);
            continue;
        }
        int left = 0, zero = 0, width = 0, len = 0;
        char buf[12], *end = buf + sizeof buf, *s = end;
        if (*++f == '-')
            left = 1, f++;
        if (*f == '0')
            zero = 1, f++;
        while (*f >= '0' && *f <= '9')
            width = width * 10 + *f++ - '0';
        if (*f == 's') {
            s = va_arg(ap, char *);
            while (s[len])
                len++;
        } else if (*f == 'c' || *f == '%') {
            *--s = *f == 'c' ? (char)va_arg(ap, int) : '%';
            len = 1;
        } else if (*f == 'd' || *f == 'u' || *f == 'x') {
            u32 n = va_arg(ap, u32), base = *f == 'x' ? 16 : 10;
            int neg = *f == 'd' && (int)n < 0;
            if (neg)
                n = -n; /* as unsigned, so INT_MIN works too */
            do
                *--s = "0123456789abcdef"[n % base];
            while (n /= base);
            if (neg)
                *--s = '-';
            len = (int)(end - s);
        } else if (!*f) {
            break; /* a lone '%' at the end */
        }
        for (; !left && width > len; width--)
            put(zero ? '0' : ' ', arg);
        for (int i = 0; i < len; i++)
            put(s[i], arg);
        for (; left && width > len; width--)
            put(' ', arg);
    }
}
