/*
 * ref_vmm.c - the smallest useful C VMM, the baseline for bench/exits.py.
 *
 * It runs a flat real-mode guest loaded at guest-physical 0 (entered at
 * 0000:0000, IF=0, 1 MiB of RAM, as minikvm does), handles every
 * KVM_EXIT_IO itself until the guest executes HLT, and prints one line:
 *
 *     exits=<KVM_RUN returns> io=<port I/O exits> bytes=<bytes kept> ns=<run loop time>
 *
 * Only the run loop is timed: creating the VM and loading the image are not.
 * There is deliberately no coalescing: every OUT, the UART's included, is one
 * exit and one trip through this loop, which is what minikvm is compared to.
 *
 * usage: ref_vmm GUEST.bin [--sync-regs]
 *   --sync-regs  have KVM copy the GPRs into kvm_run at each exit (as minikvm
 *                does) and treat port 0x500 as the PUTCHAR hypercall, which
 *                needs BL; without it port 0x500 writes are only counted.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define GUEST_RAM (1u << 20)
#define TSS_ADDR 0xFFFBD000u /* KVM on Intel needs 3 pages here for real mode */
#define PORT_HYPERCALL 0x500
#define PORT_COM1_THR 0x3F8
#define HC_PUTCHAR 1

static void die(const char *what)
{
    fprintf(stderr, "ref_vmm: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int xioctl(int fd, unsigned long request, void *arg, const char *what)
{
    int ret = ioctl(fd, request, arg);
    if (ret < 0)
        die(what);
    return ret;
}

static void load_image(const char *path, uint8_t *ram)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path);
    size_t n = fread(ram, 1, GUEST_RAM, f);
    if (n == 0)
        die("empty guest image");
    fclose(f);
}

static void real_mode_segment(struct kvm_segment *seg)
{
    seg->base = 0;
    seg->selector = 0;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s GUEST.bin [--sync-regs]\n", argv[0]);
        return 2;
    }
    int sync_regs = argc > 2 && strcmp(argv[2], "--sync-regs") == 0;

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("/dev/kvm");
    int vm = xioctl(kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM");
    if (ioctl(vm, KVM_SET_TSS_ADDR, (unsigned long)TSS_ADDR) < 0)
        die("KVM_SET_TSS_ADDR");

    uint8_t *ram = mmap(NULL, GUEST_RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                        -1, 0);
    if (ram == MAP_FAILED)
        die("mmap guest RAM");
    load_image(argv[1], ram);
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = GUEST_RAM, .userspace_addr = (uintptr_t)ram,
    };
    xioctl(vm, KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION");

    int vcpu = xioctl(vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU");
    int run_size = xioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");

    /* Real mode at 0000:0000: every segment base 0 (the reset state has CS at 0xF0000). */
    struct kvm_sregs sregs;
    xioctl(vcpu, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
    real_mode_segment(&sregs.cs);
    real_mode_segment(&sregs.ds);
    real_mode_segment(&sregs.es);
    real_mode_segment(&sregs.fs);
    real_mode_segment(&sregs.gs);
    real_mode_segment(&sregs.ss);
    xioctl(vcpu, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
    struct kvm_regs regs = {.rip = 0, .rflags = 0x2};
    xioctl(vcpu, KVM_SET_REGS, &regs, "KVM_SET_REGS");
    if (sync_regs)
        run->kvm_valid_regs = KVM_SYNC_X86_REGS;

    /* Bytes the guest "prints" are kept, not written: the benchmark times
     * the exit path, not a terminal. */
    static uint8_t output[1u << 22];
    size_t out_len = 0;
    uint64_t exits = 0, io_exits = 0;

    uint64_t start = now_ns();
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR)
                continue;
            die("KVM_RUN");
        }
        exits++;
        if (run->exit_reason == KVM_EXIT_HLT)
            break;
        if (run->exit_reason != KVM_EXIT_IO) {
            fprintf(stderr, "ref_vmm: unexpected exit reason %u\n", run->exit_reason);
            return 1;
        }
        io_exits++;
        if (run->io.direction != KVM_EXIT_IO_OUT)
            continue; /* an IN reads whatever is in the data area: no device here is read */
        const uint8_t *data = (const uint8_t *)run + run->io.data_offset;
        if (run->io.port == PORT_COM1_THR) {
            for (uint32_t i = 0; i < run->io.count; i++)
                if (out_len < sizeof output)
                    output[out_len++] = data[i * run->io.size];
        } else if (run->io.port == PORT_HYPERCALL && sync_regs && data[0] == HC_PUTCHAR) {
            if (out_len < sizeof output)
                output[out_len++] = (uint8_t)run->s.regs.regs.rbx;
        }
        /* Any other port (0x80 among them) is a null device: the exit is the work. */
    }
    uint64_t elapsed = now_ns() - start;

    printf("exits=%llu io=%llu bytes=%zu ns=%llu\n", (unsigned long long)exits, (unsigned long long)io_exits,
           out_len, (unsigned long long)elapsed);
    return 0;
}
