/* What 1K OS user programs see: system calls and a few library helpers
 * (ulib.c). Everything here runs in ring 3. */
#ifndef USER_H
#define USER_H

#include "os1k.h"

int write(const void *buf, u32 len);
int getchar(void);                  /* blocks until a byte arrives */
void exit(void) __attribute__((noreturn));
void yield(void);
int getpid(void);
void sleep(u32 ticks);
u32 uptime(void);                   /* timer ticks since boot (100 per second) */
int ps(struct pinfo *out, u32 max);
int spawn(u32 program);             /* a new process running image.prog[program]; its pid or -1 */
int wait(int pid);                  /* until that process has ended; -1 if it was not running */
void poweroff(void) __attribute__((noreturn));
void kfault(void);

void printf(const char *f, ...);    /* line-buffered: one write per line */
void flush(void);
int readline(char *buf, int size);
int strcmp(const char *a, const char *b);
int number(const char **s, int *out);
const char *skip(const char *s);

extern const struct image image;

#endif
