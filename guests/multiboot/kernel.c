/*
 * kernel.c - a multiboot test kernel: what the boot loader handed over,
 * shown on the VGA text screen and sent through COM1.
 *
 * It checks the magic in EAX, then prints the loader name, the command line,
 * the memory sizes and the memory map from the multiboot information
 * structure, checks that its .bss was zeroed, puts the hardware cursor after
 * the text and returns to boot.S, which halts with interrupts off.
 *
 * Every character goes to both the screen (0xB8000, with a colour) and the
 * UART, so a test can read the serial text and compare the screen.
 *
 * Built freestanding for i386 without SSE (-mgeneral-regs-only): no library,
 * no floating point; 64-bit values are only shifted, never divided (that
 * would need libgcc).
 */
#include <stddef.h>
#include <stdint.h>

#define MB_BOOTLOADER_MAGIC 0x2BADB002u

/* Information structure flags (which fields are valid). */
#define MBI_MEMORY       (1u << 0)
#define MBI_CMDLINE      (1u << 2)
#define MBI_MMAP         (1u << 6)
#define MBI_LOADER_NAME  (1u << 9)

struct mb_info {
    uint32_t flags;
    uint32_t mem_lower, mem_upper;      /* KiB below 640 KiB, KiB from 1 MiB */
    uint32_t boot_device;
    uint32_t cmdline;
    uint32_t mods_count, mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length, mmap_addr;
    uint32_t drives_length, drives_addr;
    uint32_t config_table;
    uint32_t boot_loader_name;
};

/* One memory map entry; `size` counts the bytes after itself, so the next
 * entry is at (char *)entry + size + 4, whatever this struct's size is. */
struct mb_mmap_entry {
    uint32_t size;
    uint64_t base, length;
    uint32_t type;
} __attribute__((packed));

/* PC hardware. */
#define VGA_TEXT    ((volatile uint16_t *)0xB8000)
#define VGA_COLS    80
#define VGA_ROWS    25
#define CRTC_INDEX  0x3D4
#define CRTC_DATA   0x3D5
#define CRTC_CURSOR_HIGH 0x0E
#define CRTC_CURSOR_LOW  0x0F
#define VGA_STATUS1 0x3DA
#define VGA_VRETRACE 0x08
#define COM1_THR    0x3F8
#define COM1_LSR    0x3FD
#define LSR_THRE    0x20

/* Colours: background << 4 | foreground. */
#define GREY     0x07
#define TITLE    0x1F   /* white on blue */
#define LABEL    0x0B   /* light cyan */
#define GOOD     0x0A   /* light green */
#define BAD      0x0C   /* light red */
#define VALUE    0x0F   /* white */

extern const char boot_variant[];
extern char __bss_start[], __bss_end[];

static inline void outb(uint16_t port, uint8_t value)
{
    __asm__ volatile ("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t value;
    __asm__ volatile ("inb %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

/* GCC may emit calls to these even in freestanding code. */
void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

/* The console: a position on the screen and the current colour.  In .data
 * (non-zero), so the flat variant has a data section for load_end_addr. */
static struct { unsigned row, col; uint8_t attr; } con = { 0, 0, GREY };

/* Checked to be zero: the loader must clear .bss (p_memsz > p_filesz, or
 * the a.out kludge's bss_end_addr).  Volatile and global, or the compiler
 * would know it is never written and fold the check away. */
volatile uint32_t bss_probe[64];

static void serial_putc(char c)
{
    while (!(inb(COM1_LSR) & LSR_THRE))
        ;
    outb(COM1_THR, (uint8_t)c);
}

static void vga_scroll(void)
{
    for (unsigned i = 0; i < (VGA_ROWS - 1) * VGA_COLS; i++)
        VGA_TEXT[i] = VGA_TEXT[i + VGA_COLS];
    for (unsigned i = (VGA_ROWS - 1) * VGA_COLS; i < VGA_ROWS * VGA_COLS; i++)
        VGA_TEXT[i] = (uint16_t)(GREY << 8 | ' ');
    con.row = VGA_ROWS - 1;
}

static void putc(char c)
{
    serial_putc(c);
    if (c == '\n') {
        con.col = 0;
        if (++con.row == VGA_ROWS)
            vga_scroll();
        return;
    }
    VGA_TEXT[con.row * VGA_COLS + con.col] = (uint16_t)(con.attr << 8 | (uint8_t)c);
    if (++con.col == VGA_COLS) {
        con.col = 0;
        if (++con.row == VGA_ROWS)
            vga_scroll();
    }
}

static void puts_in(uint8_t attr, const char *s)
{
    con.attr = attr;
    while (*s)
        putc(*s++);
    con.attr = GREY;
}

static void puts(const char *s)
{
    puts_in(GREY, s);
}

static void put_hex(uint8_t attr, uint32_t value, int digits)
{
    char buf[11] = "0x";
    for (int i = 0; i < digits; i++)
        buf[2 + i] = "0123456789abcdef"[(value >> (4 * (digits - 1 - i))) & 0xF];
    buf[2 + digits] = '\0';
    puts_in(attr, buf);
}

static void put_dec(uint8_t attr, uint32_t value)
{
    char buf[11];
    int i = sizeof buf - 1;
    buf[i] = '\0';
    do {
        buf[--i] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    puts_in(attr, buf + i);
}

static void clear_screen(void)
{
    for (unsigned i = 0; i < VGA_ROWS * VGA_COLS; i++)
        VGA_TEXT[i] = (uint16_t)(GREY << 8 | ' ');
    con.row = con.col = 0;
}

static void set_cursor(unsigned row, unsigned col)
{
    uint16_t pos = (uint16_t)(row * VGA_COLS + col);
    /* Change it during a vertical retrace, as old drivers do: the wait must
     * end, which it only does when the retrace bit really comes and goes. */
    while (inb(VGA_STATUS1) & VGA_VRETRACE)
        ;
    while (!(inb(VGA_STATUS1) & VGA_VRETRACE))
        ;
    outb(CRTC_INDEX, CRTC_CURSOR_LOW);
    outb(CRTC_DATA, (uint8_t)(pos & 0xFF));
    outb(CRTC_INDEX, CRTC_CURSOR_HIGH);
    outb(CRTC_DATA, (uint8_t)(pos >> 8));
}

static void title(void)
{
    /* A full-width blue bar on the screen; the serial line is just the words. */
    for (unsigned i = 0; i < VGA_COLS; i++)
        VGA_TEXT[i] = (uint16_t)(TITLE << 8 | ' ');
    con.col = 1;
    puts_in(TITLE, "minikvm multiboot test kernel (");
    puts_in(TITLE, boot_variant);
    puts_in(TITLE, ")");
    puts("\n");
}

static const char *mmap_type(uint32_t type)
{
    switch (type) {
    case 1: return "available";
    case 2: return "reserved";
    case 3: return "ACPI reclaimable";
    case 4: return "ACPI NVS";
    case 5: return "bad";
    default: return "unknown";
    }
}

static void show_mmap(const struct mb_info *info)
{
    uint32_t entries = 0, available_kib = 0;
    uint32_t addr = info->mmap_addr, end = info->mmap_addr + info->mmap_length;
    puts_in(LABEL, "memory map:");
    puts("\n");
    while (addr < end) {
        const struct mb_mmap_entry *e = (const struct mb_mmap_entry *)addr;
        uint64_t last = e->base + e->length - 1;
        puts("  ");
        put_hex(VALUE, (uint32_t)e->base, 8);
        puts("-");
        put_hex(VALUE, (uint32_t)last, 8);
        puts(" ");
        puts(mmap_type(e->type));
        puts("\n");
        if (e->type == 1)
            available_kib += (uint32_t)(e->length >> 10);
        entries++;
        addr += e->size + 4;
    }
    puts_in(LABEL, "available:");
    puts(" ");
    put_dec(VALUE, available_kib);
    puts(" KiB in ");
    put_dec(VALUE, entries);
    puts(" entries\n");
}

void kmain(uint32_t magic, const struct mb_info *info)
{
    clear_screen();
    title();

    puts_in(LABEL, "magic:");
    puts(" ");
    put_hex(VALUE, magic, 8);
    if (magic != MB_BOOTLOADER_MAGIC) {
        puts_in(BAD, " wrong: not started by a multiboot loader\n");
        set_cursor(con.row, con.col);
        return;
    }
    puts_in(GOOD, " ok");
    puts("\n");

    puts_in(LABEL, "loader:");
    puts(" ");
    puts_in(VALUE, info->flags & MBI_LOADER_NAME ? (const char *)info->boot_loader_name : "(not given)");
    puts("\n");

    puts_in(LABEL, "cmdline:");
    puts(" ");
    puts_in(VALUE, info->flags & MBI_CMDLINE ? (const char *)info->cmdline : "(not given)");
    puts("\n");

    if (info->flags & MBI_MEMORY) {
        puts_in(LABEL, "memory:");
        puts(" lower ");
        put_dec(VALUE, info->mem_lower);
        puts(" KiB, upper ");
        put_dec(VALUE, info->mem_upper);
        puts(" KiB\n");
    }
    if (info->flags & MBI_MMAP)
        show_mmap(info);

    uint32_t nonzero = 0;
    for (unsigned i = 0; i < sizeof bss_probe / sizeof bss_probe[0]; i++)
        nonzero |= bss_probe[i];
    puts_in(LABEL, "bss:");
    puts(" ");
    put_dec(VALUE, (uint32_t)(__bss_end - __bss_start));
    puts(" bytes, ");
    if (nonzero)
        puts_in(BAD, "NOT zeroed");
    else
        puts_in(GOOD, "zeroed");
    puts("\n");

    puts("halting.\n");
    set_cursor(con.row, con.col);
}
