/* The 1K OS: what the kernel and the user programs agree on.
 *
 * Both sides include this file: the system call numbers, the user address
 * space layout, and the two structures that cross the boundary (the process
 * list entry, and the header of the user image the kernel copies programs
 * from). */
#ifndef OS1K_H
#define OS1K_H

#include <stdarg.h> /* a freestanding header: GCC provides it, no libc needed */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

/* User space is one page table's worth (4 MiB) at 16 MiB: code and data of
 * the program image at the bottom, then one 8 KiB stack per process slot,
 * each with an unmapped gap around it. A slot's stack address is mapped in
 * that process's directory only, so another process touching it faults. */
#define USER_BASE 0x01000000u
#define USER_END 0x01400000u
#define USTACK(slot) (0x01200000u + (u32)(slot) * 0x4000u)
#define USTACK_SIZE 0x2000u
#define NPROC 16

enum { SYS_WRITE, SYS_PUTCHAR, SYS_GETCHAR, SYS_EXIT, SYS_YIELD, SYS_GETPID, SYS_SLEEP,
       SYS_UPTIME, SYS_PS, SYS_SPAWN, SYS_WAIT, SYS_POWEROFF, SYS_KFAULT };

/* Process states. RUNNING is only ever reported (the kernel knows who runs);
 * DYING lasts from exit until the kernel leaves that process's stack. */
enum { P_UNUSED, P_READY, P_SLEEPING, P_READING, P_WAITING, P_RUNNING, P_DYING };

struct pinfo { int pid, state; u32 ticks; char name[12]; };

/* The user image starts with this header: the kernel learns from it how much
 * memory a process needs, where processes start and which programs exist. */
struct program { const char *name; void (*main)(void); };
struct image {
    u32 end;                         /* first address past .bss */
    void (*start)(void (*)(void));   /* every process enters here, main as argument */
    u32 count;
    const struct program *prog;
};

/* lib.c, linked into both the kernel and the user image. */
void *memset(void *d, int c, u32 n);
void *memcpy(void *d, const void *s, u32 n);
void vfmt(void (*put)(int c, void *arg), void *arg, const char *f, va_list ap);

#endif
