/* The 1K OS kernel: console, descriptor tables, paging, processes, the
 * scheduler, system calls, and what happens when something faults.
 *
 * The kernel runs with interrupts off (every gate is an interrupt gate);
 * they are on in user mode and while the kernel waits for work in HLT.
 * That one rule replaces all locking on this single CPU. */
#include "os1k.h"

#define KBASE 0x80000000u           /* physical 0 is mapped here (higher half) */
#define P2V(a) ((void *)((u32)(a) + KBASE))
#define IMG(va) (user_image + ((u32)(va) - USER_BASE)) /* a user-image address, read in the kernel's copy */
#define V2P(a) ((u32)(a) - KBASE)
#define RAM_END 0x400000u           /* ABI.md's --paging machine has 4 MiB */
#define PTE_P 1u
#define PTE_W 2u
#define PTE_U 4u
#define COM1 0x3F8
#define HZ 100
/* Exceptions for which the CPU pushes an error code: 8, 10-14, 17, 21, 29, 30. */
#define ERROR_CODE_VECTORS (1u << 8 | 0x1Fu << 10 | 1u << 17 | 1u << 21 | 1u << 29 | 1u << 30)

struct frame {                      /* built by alltraps in entry.S */
    u32 edi, esi, ebp, esp0, ebx, edx, ecx, eax, es, ds, vec, err;
    u32 eip, cs, eflags, esp, ss;   /* esp and ss only when coming from ring 3 */
};

struct proc {
    int pid, state, slot, wait_pid;
    u32 *pd;                        /* page directory (kernel address) */
    u32 kesp;                       /* saved kernel stack pointer while switched out */
    u32 wake, ticks;                /* sleep deadline; ticks spent running */
    char name[12];
};

extern char _start[], vectors[], trapret[], user_image[], user_image_end[], _end[];
void swtch(u32 *save, u32 next);

static u64 gdt[6];
static u64 idt[256];
static u32 tss[26];                 /* 104 bytes: only ESP0/SS0 matter, no I/O bitmap */
static u32 kpd[1024] __attribute__((aligned(4096)));
static u32 kpt[1024] __attribute__((aligned(4096)));
static u8 kstacks[NPROC][4096] __attribute__((aligned(16)));
static struct proc procs[NPROC], boot, *cur = &boot;
static u32 free_list, nfree, next_pid = 1, idling;
static int shell_pid;
static volatile u32 ticks;
static u8 rx[256];                  /* received bytes, between the IRQ and getchar */
static u32 rx_head, rx_tail, last_rx;

static const char *const exc_names[32] = {
    "divide error", "debug exception", "NMI", "breakpoint", "overflow", "BOUND range exceeded",
    "invalid opcode", "device not available", "double fault", "coprocessor segment overrun",
    "invalid TSS", "segment not present", "stack-segment fault", "general protection fault",
    "page fault", "reserved 15", "x87 floating-point error", "alignment check", "machine check",
    "SIMD floating-point exception", "virtualization exception", "control protection exception",
    "reserved 22", "reserved 23", "reserved 24", "reserved 25", "reserved 26", "reserved 27",
    "hypervisor injection", "VMM communication exception", "security exception", "reserved 31"};

static inline void outb(u16 port, u8 v) { asm volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void lcr3(u32 pa) { asm volatile("mov %0, %%cr3" : : "r"(pa) : "memory"); }

/* ---- console: COM1, polled for output, interrupt-driven for input ---- */

static void kputc(int c, void *unused)
{
    (void)unused;
#ifdef HYPERCALL_CONSOLE            /* the original Mini-KVM ABI: PUTCHAR (AL=1, BL=byte) */
    asm volatile("outb %%al, %%dx" : : "a"(1), "b"(c), "d"(0x500));
    return;
#endif
    while (!(inb(COM1 + 5) & 0x20)) /* LSR.THRE: room for one more byte */
        ;
    outb(COM1, (u8)c);
}

static void kprintf(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vfmt(kputc, 0, f, ap);
    va_end(ap);
}

static void wake_all(int state)
{
    for (int i = 0; i < NPROC; i++)
        if (procs[i].state == state)
            procs[i].state = P_READY;
}

/* Move what the UART holds into rx[] while it has room; what does not fit
 * waits in the UART until getchar makes room and calls this again.
 * A CR LF pair counts as one line end, whatever sends it. */
static void uart_receive(void)
{
    while ((rx_head - rx_tail) < sizeof rx && (inb(COM1 + 5) & 1)) {
        u8 c = inb(COM1);
        if (!(c == '\n' && last_rx == '\r'))
            rx[rx_head++ % sizeof rx] = c;
        last_rx = c;
    }
    if (rx_head != rx_tail)
        wake_all(P_READING);
}

/* ---- physical pages: a free list threaded through the free pages ---- */

static void pfree(u32 pa)
{
    *(u32 *)P2V(pa) = free_list;
    free_list = pa;
    nfree++;
}

static u32 palloc(void)             /* callers check nfree first */
{
    u32 pa = free_list;
    free_list = *(u32 *)P2V(pa);
    nfree--;
    return (u32)memset(P2V(pa), 0, 4096) - KBASE;
}

/* ---- the scheduler ---- */

static void switch_to(struct proc *p)
{
    struct proc *old = cur;
    cur = p;
    if (old->state == P_DYING)      /* swtch below leaves its stack; with interrupts off */
        old->state = P_UNUSED;      /* nothing can reuse the slot before that */
    tss[1] = (u32)kstacks[p->slot] + 4096; /* ESP0: where ring 3 traps land */
    lcr3(V2P(p->pd));
    if (p != old)
        swtch(&old->kesp, p->kesp);
}

/* Run the next ready process after the current one, round-robin. With
 * nobody ready, wait in HLT with interrupts on (STI's one-instruction delay
 * means no interrupt slips in between the two): the IRQ handlers make
 * processes ready, then look again. */
static void schedule(void)
{
    for (;;) {
        for (int i = 1; i <= NPROC; i++) {
            struct proc *p = &procs[(cur->slot + i) % NPROC];
            if (p->state == P_READY) {
                switch_to(p);
                return;
            }
        }
        idling = 1;
        asm volatile("sti; hlt; cli" : : : "memory");
        idling = 0;
    }
}

static void yield(void)
{
    cur->state = P_READY;
    schedule();
}

/* ---- processes ---- */

/* A new process running program `index` of the user image: its own page
 * directory (the kernel's half shared, supervisor-only), a private copy of
 * the image at USER_BASE, a stack in its slot, and a kernel stack made to
 * look as if it had trapped from user mode at the image's start routine. */
static int spawn(u32 index)
{
    struct image *img = (struct image *)user_image;
    const struct program *prog = (const struct program *)IMG(img->prog) + index;
    u32 size = user_image_end - user_image, pages = (img->end - USER_BASE + 4095) / 4096;
    struct proc *p = 0;
    for (int i = 0; i < NPROC && !p; i++)
        if (procs[i].state == P_UNUSED)
            p = &procs[i];
    if (!p || index >= img->count || nfree < pages + 2 + USTACK_SIZE / 4096)
        return -1;
    p->pd = P2V(palloc());
    u32 pt = palloc(), *ptv = P2V(pt), stack = 0;
    p->pd[KBASE >> 22] = kpd[KBASE >> 22];
    p->pd[USER_BASE >> 22] = pt | PTE_P | PTE_W | PTE_U;
    for (u32 off = 0; off < pages * 4096; off += 4096) {
        u32 pa = palloc();
        ptv[off >> 12] = pa | PTE_P | PTE_W | PTE_U;
        if (off < size)
            memcpy(P2V(pa), user_image + off, size - off < 4096 ? size - off : 4096);
    }
    for (u32 va = USTACK(p->slot); va < USTACK(p->slot) + USTACK_SIZE; va += 4096)
        ptv[(va >> 12) & 1023] = (stack = palloc()) | PTE_P | PTE_W | PTE_U;
    /* start(main): the argument sits above a zero return address. */
    ((u32 *)P2V(stack))[1023] = (u32)prog->main;
    struct frame *f = (struct frame *)(kstacks[p->slot] + 4096) - 1;
    memset(f, 0, sizeof *f);
    f->ds = f->es = f->ss = 0x23;   /* ring-3 data, RPL 3 */
    f->cs = 0x1B;                   /* ring-3 code, RPL 3 */
    f->eflags = 0x202;              /* IF on in user mode; IOPL 0 keeps I/O privileged */
    f->eip = (u32)img->start;
    f->esp = USTACK(p->slot) + USTACK_SIZE - 8;
    u32 *sp = (u32 *)f;
    *--sp = (u32)trapret;           /* where swtch's ret goes */
    p->kesp = (u32)(sp - 4);        /* below the four registers swtch pops */
    const char *name = IMG(prog->name);
    int n = 0;
    for (; n < 11 && name[n]; n++)
        p->name[n] = name[n];
    p->name[n] = 0;
    p->pid = next_pid++;
    p->ticks = 0;
    p->state = P_READY;
    return p->pid;
}

/* The current process ends: give back its pages (after leaving its
 * address space), wake whoever waits for it, and never come back. */
static void exit_proc(void)
{
    struct proc *p = cur;
    u32 *ptv = P2V(p->pd[USER_BASE >> 22] & ~0xFFFu);
    lcr3(V2P(kpd));
    for (int i = 0; i < 1024; i++)
        if (ptv[i] & PTE_P)
            pfree(ptv[i] & ~0xFFFu);
    pfree(V2P(ptv));
    pfree(V2P(p->pd));
    p->state = P_DYING;             /* not reusable while we still run on its kernel stack */
    for (int i = 0; i < NPROC; i++)
        if (procs[i].state == P_WAITING && procs[i].wait_pid == p->pid)
            procs[i].state = P_READY;
    if (p->pid == shell_pid) {      /* the console must never be left without a shell */
        kprintf("[os] the shell ended; starting a new one\n");
        shell_pid = spawn(0);
    }
    schedule();
}

/* ---- faults ---- */

static u32 rcr2(void) { u32 v; asm volatile("mov %%cr2, %0" : "=r"(v)); return v; }

/* "page fault writing 0x00000000", or the exception's name and error code.
 * 32-bit paging without NX sets no fetch bit in the error code: a fault
 * at the instruction pointer itself is the fetch. */
static void describe(struct frame *f)
{
    if (f->vec == 14)
        kprintf("page fault %s 0x%08x", f->err & 16 || rcr2() == f->eip ? "executing" : f->err & 2 ? "writing"
                : "reading", rcr2());
    else if (ERROR_CODE_VECTORS >> f->vec & 1)
        kprintf("%s (error code 0x%x)", exc_names[f->vec], f->err);
    else
        kprintf("%s", exc_names[f->vec]);
}

/* A fault in ring 0 is a kernel bug: say everything we know, then stop the
 * CPU for good (the VMM reports a halt, not a triple fault). */
static void panic(struct frame *f)
{
    kprintf("\n[os] KERNEL PANIC: %s (vector %d), error code 0x%x, eip 0x%08x\n[os] ",
            exc_names[f->vec], f->vec, f->err, f->eip);
    describe(f);
    kprintf(" in pid %d (%s), cr2 0x%08x\n", cur->pid, cur->name, rcr2());
    kprintf("[os] eax %08x ebx %08x ecx %08x edx %08x\n", f->eax, f->ebx, f->ecx, f->edx);
    /* A ring-0 trap pushes no ESP: the interrupted stack ends where the frame does. */
    kprintf("[os] esi %08x edi %08x ebp %08x esp %08x\n", f->esi, f->edi, f->ebp, (u32)&f->esp);
    kprintf("[os] cs %04x ds %04x es %04x eflags %08x\n[os] system halted\n", f->cs, f->ds, f->es, f->eflags);
    for (;;)
        asm volatile("cli; hlt");
}

/* A fault in ring 3 is the process's own: report it in one line, end it. */
static void kill(struct frame *f)
{
    kprintf("[os] pid %d (%s) killed: ", cur->pid, cur->name);
    describe(f);
    kprintf(" at eip 0x%08x\n", f->eip);
    exit_proc();
}

/* ---- system calls: number in EAX, arguments in EBX and ECX, result in EAX ---- */

/* Is [va, va+len) user memory this process maps? The kernel runs in the
 * caller's address space, so after this check it can use the pointer. */
static int user_ok(u32 va, u32 len)
{
    u32 *ptv = P2V(cur->pd[USER_BASE >> 22] & ~0xFFFu);
    if (va < USER_BASE || va + len < va || va + len > USER_END)
        return 0;
    for (u32 a = va & ~0xFFFu; a < va + len; a += 4096)
        if (!(ptv[(a >> 12) & 1023] & PTE_U))
            return 0;
    return 1;
}

static int alive(int pid)
{
    for (int i = 0; i < NPROC; i++)
        if (procs[i].state != P_UNUSED && procs[i].pid == pid)
            return 1;
    return 0;
}

static u32 syscall(struct frame *f)
{
    u32 a = f->ebx, b = f->ecx;
    switch (f->eax) {
    case SYS_WRITE:
        if (!user_ok(a, b))
            return -1;
        for (u32 i = 0; i < b; i++)
            kputc(((char *)a)[i], 0);
        return b;
    case SYS_PUTCHAR:
        kputc(a, 0);
        return 0;
    case SYS_GETCHAR:               /* sleep until the UART's interrupt brings a byte */
        while (rx_head == rx_tail) {
            cur->state = P_READING;
            schedule();
        }
        a = rx[rx_tail++ % sizeof rx];
        uart_receive();             /* room again: take what waited in the UART */
        return a;
    case SYS_EXIT:
        exit_proc();
        return 0;
    case SYS_YIELD:
        yield();
        return 0;
    case SYS_GETPID:
        return cur->pid;
    case SYS_SLEEP:
        cur->wake = ticks + a;
        cur->state = P_SLEEPING;
        schedule();
        return 0;
    case SYS_UPTIME:
        return ticks;
    case SYS_PS: {                  /* fill up to b entries at a */
        struct pinfo *out = (struct pinfo *)a;
        u32 n = 0;
        if (b > NPROC || !user_ok(a, b * sizeof *out))
            return -1;
        for (struct proc *p = procs; p < procs + NPROC && n < b; p++) {
            if (p->state == P_UNUSED)
                continue;
            out[n].pid = p->pid;
            out[n].state = p == cur ? P_RUNNING : p->state;
            out[n].ticks = p->ticks;
            memcpy(out[n++].name, p->name, sizeof p->name);
        }
        return n;
    }
    case SYS_SPAWN:
        return spawn(a);
    case SYS_WAIT:
        if ((int)a == cur->pid || !alive(a))
            return -1;
        cur->wait_pid = a;
        cur->state = P_WAITING;
        schedule();
        return 0;
    case SYS_POWEROFF:              /* ABI.md hypercall EXIT: AL = 0 to port 0x500 */
        kprintf("[os] power off after %u ticks\n", ticks);
        asm volatile("outb %%al, %%dx" : : "a"(0), "b"(0), "d"(0x500));
        for (;;)                    /* no hypercall port (real hardware): just stop */
            asm volatile("cli; hlt");
    case SYS_KFAULT:                /* demonstrates the panic path: a NULL write in ring 0 */
        *(volatile u32 *)0 = 0;
        return 0;
    }
    return -1;
}

/* Every interrupt and exception comes here from alltraps. */
void trap(struct frame *f)
{
    int from_user = (f->cs & 3) == 3;
    if (f->vec == 0x80) {
        f->eax = syscall(f);
    } else if (f->vec == 0x20) {    /* IRQ 0, the PIT: time and preemption */
        ticks++;
        if (!idling)
            cur->ticks++;
        for (int i = 0; i < NPROC; i++)
            if (procs[i].state == P_SLEEPING && (int)(ticks - procs[i].wake) >= 0)
                procs[i].state = P_READY;
        outb(0x20, 0x20);           /* EOI before switching away */
        if (from_user)              /* never preempt the kernel: it has no locks */
            yield();
    } else if (f->vec == 0x24) {    /* IRQ 4, COM1: input arrived */
        uart_receive();
        outb(0x20, 0x20);
    } else if (f->vec < 32) {
        if (from_user)
            kill(f);                /* does not return */
        else
            panic(f);
    } else if (f->vec != 0x27) {    /* IRQ 7 can only be spurious (masked): no EOI */
        outb(0x20, 0x20);           /* any other IRQ is masked; acknowledge and ignore */
    }
}

/* ---- boot: take the machine over from the VMM's boot state ---- */

static u64 seg(u32 base, u32 limit, u32 access, u32 flags)
{
    return (limit & 0xFFFF) | (u64)(base & 0xFFFFFF) << 16 | (u64)access << 40 |
           (u64)((limit >> 16) & 0xF) << 48 | (u64)flags << 52 | (u64)(base >> 24) << 56;
}

static void load_table(int lgdt, void *base, u32 size)
{
    struct __attribute__((packed)) { u16 limit; u32 base; } d = {(u16)(size - 1), (u32)base};
    if (lgdt)
        asm volatile("lgdt %0" : : "m"(d));
    else
        asm volatile("lidt %0" : : "m"(d));
}

static void tables_init(void)
{
    gdt[1] = seg(0, 0xFFFFF, 0x9A, 0xC);   /* 0x08 kernel code: flat, 4 KiB granular, 32-bit */
    gdt[2] = seg(0, 0xFFFFF, 0x92, 0xC);   /* 0x10 kernel data */
    gdt[3] = seg(0, 0xFFFFF, 0xFA, 0xC);   /* 0x18 user code, DPL 3 */
    gdt[4] = seg(0, 0xFFFFF, 0xF2, 0xC);   /* 0x20 user data, DPL 3 */
    gdt[5] = seg((u32)tss, sizeof tss - 1, 0x89, 0); /* 0x28 available 32-bit TSS */
    tss[2] = 0x10;                          /* SS0 */
    tss[25] = sizeof tss << 16;             /* I/O bitmap beyond the limit: none */
    load_table(1, gdt, sizeof gdt);
    asm volatile("ljmp $0x08, $1f; 1: mov %0, %%ds; mov %0, %%es; mov %0, %%ss; mov %0, %%fs;"
                 "mov %0, %%gs; ltr %w1" : : "r"(0x10), "r"(0x28));
    for (int i = 0; i < 256; i++) {         /* interrupt gates; only int 0x80 is open to ring 3 */
        u32 stub = (u32)vectors + 16 * i;
        idt[i] = (stub & 0xFFFF) | 0x08u << 16 | (u64)(i == 0x80 ? 0xEE00 : 0x8E00) << 32 |
                 (u64)(stub >> 16) << 48;
    }
    load_table(0, idt, sizeof idt);
}

/* Our own page tables: only the higher half (0x80000000 -> physical 0-4 MiB),
 * so a kernel NULL pointer faults; every process directory shares kpt.
 * Then every page above the kernel image joins the free list, except the
 * PC's legacy hole at 640 KiB-1 MiB (VGA memory and ROMs, not RAM). */
static void paging_init(void)
{
    for (u32 i = 0; i < 1024; i++)
        kpt[i] = i * 4096 | PTE_P | PTE_W;
    kpd[KBASE >> 22] = V2P(kpt) | PTE_P | PTE_W;
    lcr3(V2P(kpd));
    for (u32 pa = (V2P(_end) + 4095) & ~4095u; pa < RAM_END; pa += 4096)
        if (pa < 0xA0000 || pa >= 0x100000)
            pfree(pa);
}

/* 8259A pair: IRQs 0-15 to vectors 0x20-0x2F, away from the CPU's
 * exceptions; only the timer (IRQ 0) and COM1 (IRQ 4) unmasked. The 8254's
 * channel 0 divides 1.193182 MHz down to HZ in mode 2 (rate generator). */
static void pic_pit_init(void)
{
    static const u8 icw[2][4] = {{0x11, 0x20, 0x04, 0x01}, {0x11, 0x28, 0x02, 0x01}};
    for (int chip = 0; chip < 2; chip++)
        for (int i = 0; i < 4; i++)
            outb((chip ? 0xA0 : 0x20) + (i > 0), icw[chip][i]);
    outb(0x21, 0xEE);
    outb(0xA1, 0xFF);
    u32 divisor = (1193182 + HZ / 2) / HZ;
    outb(0x43, 0x34);
    outb(0x40, divisor & 0xFF);
    outb(0x40, divisor >> 8);
}

void kmain(void)
{
    /* The FIFOs stay off (16450 mode): switching them on clears the receiver,
     * losing input that is already waiting (typed or piped ahead of boot),
     * and a console is served well enough one byte per interrupt. */
    outb(COM1 + 3, 0x80);           /* DLAB: divisor 1 = 115200 baud */
    outb(COM1, 1);
    outb(COM1 + 1, 0);
    outb(COM1 + 3, 0x03);           /* 8 data bits, no parity, 1 stop bit */
    outb(COM1 + 4, 0x0B);           /* DTR, RTS, and OUT2: on a PC it gates IRQ 4 */
    kprintf("\n[os] 1K OS booting: kernel at 0x%08x-0x%08x, physical 0x%x-0x%x\n", (u32)_start,
            (u32)_end, V2P(_start), V2P(_end));
    tables_init();
    paging_init();
    pic_pit_init();
    outb(COM1 + 1, 0x01);           /* after the PIC is set up, so IRQ 4's edge is not lost */
    struct image *img = (struct image *)user_image;
    kprintf("[os] GDT with TSS, IDT with 256 gates, own page directory; %u KiB free\n", nfree * 4);
    kprintf("[os] PIC at vectors 0x20-0x2f, PIT at %d Hz, COM1 IRQ 4; %u programs of %u bytes\n", HZ,
            img->count, user_image_end - user_image);
    for (int i = 0; i < NPROC; i++)
        procs[i].slot = i;
    boot.slot = NPROC - 1;          /* so the search for the first process starts at slot 0 */
    shell_pid = spawn(0);
    schedule();                     /* leaves the boot stack for good */
}
