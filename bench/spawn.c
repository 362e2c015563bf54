/*
 * spawn.c - run a command, then report its wall time and peak RSS on stderr.
 *
 *     spawn COMMAND [ARGS...]   ->   spawn: ns=<wall> maxrss_kb=<peak RSS> status=<exit status>
 *
 * Why not measure from Python: a child's ru_maxrss starts at the RSS of the
 * process that forked it (fork copies the page-table counts, and exec keeps
 * the old high-water mark), so a child of the ~20 MB benchmark script could
 * never report less than ~20 MB. Forked from this small program instead, the
 * floor is about 1 MB. The clock runs from just before fork to the reap.
 */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s COMMAND [ARGS...]\n", argv[0]);
        return 2;
    }
    unsigned long long start = now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        perror("spawn: fork");
        return 1;
    }
    if (pid == 0) {
        execv(argv[1], argv + 1);
        perror("spawn: exec");
        _exit(127);
    }
    int status;
    struct rusage usage;
    if (wait4(pid, &status, 0, &usage) < 0) {
        perror("spawn: wait4");
        return 1;
    }
    unsigned long long elapsed = now_ns() - start;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    fprintf(stderr, "spawn: ns=%llu maxrss_kb=%ld status=%d\n", elapsed, usage.ru_maxrss, code);
    return 0;
}
