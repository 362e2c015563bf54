/* The user library: system call stubs, buffered printf, line editing and
 * number parsing. Linked into the user image; each process has its own copy
 * of the data here (its own pages), so the buffers need no locking. */
#include "user.h"

/* int 0x80: number in EAX, arguments in EBX and ECX, result in EAX. */
static int sys(u32 n, u32 a, u32 b)
{
    int r;
    asm volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b) : "memory");
    return r;
}

static struct { u32 n; char d[128]; } out;

void flush(void)
{
    if (out.n)
        sys(SYS_WRITE, (u32)out.d, out.n);
    out.n = 0;
}

int write(const void *buf, u32 len) { flush(); return sys(SYS_WRITE, (u32)buf, len); }
int getchar(void) { flush(); return sys(SYS_GETCHAR, 0, 0); }
void exit(void) { flush(); sys(SYS_EXIT, 0, 0); for (;;) ; }
void yield(void) { sys(SYS_YIELD, 0, 0); }
int getpid(void) { return sys(SYS_GETPID, 0, 0); }
void sleep(u32 ticks) { flush(); sys(SYS_SLEEP, ticks, 0); }
u32 uptime(void) { return sys(SYS_UPTIME, 0, 0); }
int ps(struct pinfo *p, u32 max) { return sys(SYS_PS, (u32)p, max); }
int spawn(u32 program) { flush(); return sys(SYS_SPAWN, program, 0); }
int wait(int pid) { flush(); return sys(SYS_WAIT, pid, 0); }
void poweroff(void) { flush(); sys(SYS_POWEROFF, 0, 0); for (;;) ; }
void kfault(void) { flush(); sys(SYS_KFAULT, 0, 0); }

/* Whole lines go out in one system call, so the lines of processes that
 * print at the same time interleave but never mix within a line. */
static void put(int c, void *unused)
{
    (void)unused;
    out.d[out.n++] = (char)c;
    if (c == '\n' || out.n == sizeof out.d)
        flush();
}

void printf(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vfmt(put, 0, f, ap);
    va_end(ap);
}

/* Read a line with echo: backspace or delete erases, CR or LF ends it.
 * Characters past the buffer are dropped, and the line says so. */
int readline(char *buf, int size)
{
    int n = 0, dropped = 0;
    for (;;) {
        int c = getchar();
        if (c == '\r' || c == '\n')
            break;
        if ((c == '\b' || c == 127) && n > 0) {
            n--;
            write("\b \b", 3);
        } else if (c >= ' ' && c <= '~' && n < size - 1) {
            buf[n++] = (char)c;
            write(&buf[n - 1], 1);
        } else if (c >= ' ' && c <= '~') {
            dropped++;
        }
    }
    buf[n] = 0;
    printf("\n");
    if (dropped)
        printf("[line too long: kept %d characters, dropped %d]\n", n, dropped);
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return (u8)*a - (u8)*b;
}

const char *skip(const char *s)
{
    while (*s == ' ')
        s++;
    return s;
}

/* Parse an optionally negative decimal at *s (after spaces), advancing *s.
 * Fails on no digits or a value beyond 32 bits. */
int number(const char **s, int *out_value)
{
    const char *p = skip(*s);
    int neg = *p == '-', v = 0, digits = 0;
    for (p += neg; *p >= '0' && *p <= '9'; p++, digits++)
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, neg ? '0' - *p : *p - '0', &v))
            return 0;
    *s = p;
    *out_value = v;
    return digits > 0;
}
