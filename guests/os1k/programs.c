/* The shell and the programs of the 1K OS. Each runs as its own ring-3
 * process, in its own copy of this image; the kernel finds them through
 * the header at the start of the image (`image`, at the end of this file). */
#include "user.h"

#define MENU_PROGRAMS 9             /* image.prog[1..9] are the menu's 1-9 */

static void start(void (*main)(void))
{
    main();
    exit();
}

/* A command's program: 1-9 are the menu's entries; any program by its name. */
static int find(const char *name)
{
    if (name[0] >= '1' && name[0] <= '9' && !name[1])
        return name[0] - '0';
    for (u32 i = 1; i < image.count; i++)
        if (!strcmp(name, image.prog[i].name))
            return (int)i;
    return -1;
}

static void menu(void)
{
    printf("\n1K OS menu\n");
    for (int i = 1; i <= MENU_PROGRAMS; i++)
        printf("  %d  %s\n", i, image.prog[i].name);
    printf("  0  power off\nmore:");
    for (u32 i = MENU_PROGRAMS + 1; i < image.count; i++)
        printf(" %s", image.prog[i].name);
    printf("\n'name &' runs in the background, 'wait' waits for those, 'help' shows this menu\n");
}

/* Runs each command as a child process and waits for it, unless the line
 * ends in '&'; 0 powers the machine off. */
static void shell(void)
{
    char line[64];
    int jobs[NPROC], njobs = 0;
    menu();
    for (;;) {
        printf("os1k> ");
        int n = readline(line, sizeof line), background = 0;
        while (n > 0 && line[n - 1] == ' ')
            line[--n] = 0;
        if (n > 0 && line[n - 1] == '&') {
            background = 1;
            for (line[--n] = 0; n > 0 && line[n - 1] == ' ';)
                line[--n] = 0;
        }
        const char *cmd = skip(line);
        int prog = find(cmd), pid;
        if (!*cmd)
            continue;
        if (!strcmp(cmd, "0"))
            poweroff();
        if (!strcmp(cmd, "help")) {
            menu();
        } else if (!strcmp(cmd, "wait")) {
            while (njobs > 0)
                wait(jobs[--njobs]);
        } else if (prog < 0) {
            printf("unknown command '%s' (type help)\n", cmd);
        } else if ((pid = spawn(prog)) < 0) {
            printf("cannot start %s: no free process slot or memory\n", cmd);
        } else if (background && njobs < NPROC) {
            jobs[njobs++] = pid;
            printf("[%d] %s running in the background\n", pid, image.prog[prog].name);
        } else {
            wait(pid);
        }
    }
}

static void table(void)
{
    printf("  x |");
    for (int j = 1; j <= 9; j++)
        printf("%4d", j);
    printf("\n----+------------------------------------\n");
    for (int i = 1; i <= 9; i++) {
        printf("%3d |", i);
        for (int j = 1; j <= 9; j++)
            printf("%4d", i * j);
        printf("\n");
    }
}

static void counter(void)           /* one number per 10 ticks: sleeping, not spinning */
{
    printf("counting:");
    for (int i = 0; i <= 9; i++) {
        printf(" %d", i);
        sleep(10);
    }
    printf("\n");
}

static void echo(void)
{
    char line[64];
    printf("echo: type lines, 'quit' ends\n");
    for (;;) {
        printf("echo> ");
        readline(line, sizeof line);
        if (!strcmp(line, "quit"))
            break;
        printf("%s\n", line);
    }
}

static void fibonacci(void)
{
    u32 a = 0, b = 1;
    printf("Fibonacci numbers below 1000000: %u", a);
    while (b < 1000000) {
        printf(", %u", b);
        b += a;
        a = b - a;
    }
    printf("\n");
}

static void primes(void)            /* the sieve of Eratosthenes */
{
    char composite[101] = {0};
    int count = 0;
    printf("primes up to 100:");
    for (int i = 2; i <= 100; i++) {
        if (composite[i])
            continue;
        printf(" %d", i);
        count++;
        for (int j = i * i; j <= 100; j += i)
            composite[j] = 1;
    }
    printf("\n%d primes\n", count);
}

static void calculator(void)
{
    char line[64];
    printf("calculator: a + b, a - b, a * b or a / b (integers); q quits\n");
    for (;;) {
        printf("calc> ");
        readline(line, sizeof line);
        if (!strcmp(line, "q"))
            break;
        const char *s = line;
        int a, b, r = 0, ok = number(&s, &a);
        char op = *(s = skip(s));
        ok = ok && (op == '+' || op == '-' || op == '*' || op == '/') && (s++, number(&s, &b)) && !*skip(s);
        if (!ok)
            printf("error: expected <number> <+ - * /> <number>\n");
        else if (op == '/' && b == 0)
            printf("error: division by zero\n");
        else if ((op == '+' && __builtin_add_overflow(a, b, &r)) || (op == '-' && __builtin_sub_overflow(a, b, &r))
                 || (op == '*' && __builtin_mul_overflow(a, b, &r)) || (op == '/' && a == (int)0x80000000 && b == -1))
            printf("error: the result does not fit in 32 bits\n");
        else                        /* C division truncates toward zero */
            printf("%d %c %d = %d\n", a, op, b, op == '/' ? a / b : r);
    }
}

static void factorials(void)
{
    u32 f = 1;
    for (u32 n = 0; n <= 12; f *= ++n)
        printf("%2u! = %u\n", n, f);
}

static void gcd(void)
{
    char line[64];
    printf("gcd: two numbers >= 0 per line, Euclid's algorithm shows its steps; q quits\n");
    for (;;) {
        printf("gcd> ");
        readline(line, sizeof line);
        if (!strcmp(line, "q"))
            break;
        const char *s = line;
        int a, b;
        if (!number(&s, &a) || !number(&s, &b) || *skip(s) || a < 0 || b < 0) {
            printf("error: expected two numbers >= 0\n");
            continue;
        }
        int x = a, y = b;
        while (y) {
            printf("  %d = %d * %d + %d\n", x, x / y, y, x % y);
            int r = x % y;
            x = y;
            y = r;
        }
        printf("gcd(%d, %d) = %d\n", a, b, x);
    }
}

static void about(void)
{
    u16 cs;
    asm("mov %%cs, %0" : "=r"(cs));
    printf("The 1K OS: a preemptive multitasking kernel in under 1000 lines of C and assembly,\n");
    printf("the teaching OS bundled with minikvm. Every program is a process with its own\n");
    printf("page directory; the kernel is mapped into each, but only ring 0 may touch it.\n");
    printf("You are pid %d, running in ring %d, %u ticks after boot; %u programs are built in.\n",
           getpid(), cs & 3, uptime(), image.count);
}

static void ps_main(void)
{
    static const char *const states[] = {"unused", "ready", "sleeping", "reading", "waiting", "running", "dying"};
    struct pinfo p[NPROC];
    int n = ps(p, NPROC);
    printf("  PID STATE     TICKS NAME\n");
    for (int i = 0; i < n; i++)
        printf("%5d %-9s %5u %s\n", p[i].pid, states[p[i].state], p[i].ticks, p[i].name);
}

static void uptime_main(void)
{
    u32 t = uptime();
    printf("up %u.%02u seconds (%u ticks)\n", t / 100, t % 100, t);
}

/* Burns CPU between lines and never yields or sleeps: the two spinners
 * interleave only because the timer interrupt preempts them. */
static void spinner(void)
{
    for (int round = 1; round <= 8; round++) {
        u32 until = uptime() + 10;
        for (volatile u32 x = 0; uptime() < until;)
            for (int i = 0; i < 10000; i++)
                x++;
        printf("spinner %d: round %d\n", getpid(), round);
    }
}

static void spin(void)
{
    int a = spawn(find("spinner")), b = spawn(find("spinner"));
    printf("spin: spinners %d and %d started\n", a, b);
    wait(a);
    wait(b);
    printf("spin: both spinners finished\n");
}

static void crash(void)
{
    printf("crash: writing to address 0\n");
    *(volatile int *)0 = 1;
    printf("crash: still alive?!\n");
}

static void kread(void)
{
    printf("kread: reading kernel memory at 0x80001000\n");
    printf("kread: read 0x%x?!\n", *(volatile u32 *)0x80001000);
}

static void peek(void)              /* the shell (slot 0) maps this stack; we do not */
{
    printf("peek: reading the shell's stack at 0x%08x\n", USTACK(0));
    printf("peek: read 0x%x?!\n", *(volatile u32 *)USTACK(0));
}

static void div0(void)
{
    volatile int dividend = 42, zero = 0; /* volatile: GCC may not fold a division it sees is by 0 */
    printf("div0: dividing by zero\n");
    printf("div0: got %d?!\n", dividend / zero);
}

static void priv(void)
{
    printf("priv: executing cli in ring 3\n");
    asm volatile("cli");
    printf("priv: still alive?!\n");
}

static void worker(void)
{
    u32 t = (u32)getpid() % 5 * 10 + 10;
    sleep(t);
    printf("worker %d: slept %u ticks\n", getpid(), t);
}

static void swarm(void)             /* many processes at once */
{
    int pids[10], n = 0;
    for (int i = 0; i < 10; i++)
        if ((pids[n] = spawn(find("worker"))) > 0)
            n++;
    printf("swarm: started %d workers\n", n);
    ps_main();
    while (n > 0)
        wait(pids[--n]);
    printf("swarm: all workers finished\n");
}

static void panic_main(void)
{
    printf("panic: asking the kernel to write to address 0 (ring 0)\n");
    kfault();
}

static const struct program programs[] = {
    {"shell", shell}, {"multiplication table", table}, {"counter", counter}, {"echo", echo},
    {"fibonacci", fibonacci}, {"primes", primes}, {"calculator", calculator}, {"factorials", factorials},
    {"gcd", gcd}, {"about", about}, {"ps", ps_main}, {"spin", spin}, {"crash", crash},
    {"uptime", uptime_main}, {"kread", kread}, {"peek", peek}, {"div0", div0}, {"priv", priv},
    {"swarm", swarm}, {"spinner", spinner}, {"worker", worker}, {"panic", panic_main}};

extern char _uend[];                /* user.ld: the end of .bss */
const struct image image __attribute__((section(".image"))) = {
    (u32)_uend, start, sizeof programs / sizeof *programs, programs};
