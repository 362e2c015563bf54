"""Parallel guests: throughput of two CPU-bound guests in one minikvm process vs one guest.

minikvm runs each guest in its own thread and releases the GIL during
KVM_RUN, so two guests that rarely exit should use two cores. The guest is a
xorshift loop of ITERATIONS rounds that ends with the EXIT hypercall; its work
is ITERATIONS / wall seconds, summed over the guests running together.

Guest kinds:
  native    64-bit long mode; the loop runs at CPL3, which every KVM host
            (kvm-pvm included) runs natively. The guest drops to ring 3 with
            IRETQ and IOPL=3, so it can issue the hypercall from ring 3
            without building an IDT or TSS.
  emulated  the same loop in real mode: on kvm-pvm every CPL0 instruction is
            emulated by the host kernel, in the vCPU thread's KVM_RUN.

Configurations, interleaved, REPEATS times each; the best runs are compared
(other work on the host only ever slows a run down), medians also shown:
  1 guest           one guest in this process (the baseline)
  2 guests, 1 proc  two guests in one process through run_machines (minikvm)
  2 guests, 2 procs two processes with one guest each (the host's headroom:
                    what two cores give with no GIL in the picture)

The bundled primes_64 guest also does its work at CPL3, but finishes in a few
milliseconds, too short to time two of them overlapping; it is run once and
its time reported, to record why it is not the workload.

Target (the issue): 2 guests / 1 guest throughput >= 1.8 on 2 free cores.
The script samples how busy the CPUs were before it starts, because other
work on the host lowers what any configuration can reach.

usage: python bench/parallel.py [--seconds S] [--repeats R] [--wait-idle SECONDS]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BUILD_DIR,
    REPO,
    Kvm,
    Mode,
    bar_chart,
    build_guest,
    busy_cpus,
    host_facts,
    median,
    print_table,
    run_inprocess,
    spread,
    verdict,
    write_json,
)

# One xorshift64 step per round (Marsaglia's 13/7/17): a serial dependency
# chain, so the work cannot be skipped, and no memory traffic to share.
NATIVE_GUEST = r"""
    .code64
    .text
    .globl _start
_start:                             # CPL0, entered by minikvm's long-mode loader
    pushq   $0x23                   # SS: ABI GDT ring-3 data (0x20) | RPL 3
    pushq   $0x7000                 # RSP: unused, the loop needs no stack
    pushq   $0x3002                 # RFLAGS: IOPL=3 (ring 3 may OUT), IF=0
    pushq   $0x1b                   # CS: ABI GDT ring-3 code (0x18) | RPL 3
    lea     user(%rip), %rax
    push    %rax
    iretq                           # to CPL3, where the host runs us natively
user:
    movabs  $ITERATIONS, %rcx
    mov     $0x2545F491, %eax
1:
    mov     %rax, %rdx
    shl     $13, %rdx
    xor     %rdx, %rax
    mov     %rax, %rdx
    shr     $7, %rdx
    xor     %rdx, %rax
    mov     %rax, %rdx
    shl     $17, %rdx
    xor     %rdx, %rax
    dec     %rcx
    jnz     1b
    mov     $0x500, %dx             # EXIT hypercall: AL=0
    xor     %eax, %eax
    out     %al, %dx
    hlt                             # not reached
"""

# The same rounds on 32-bit registers (xorshift32: 13/17/5), in real mode.
EMULATED_GUEST = r"""
    .code16
    .text
    .globl _start
_start:
    mov     $ITERATIONS, %ecx
    mov     $0x2545F491, %eax
1:
    mov     %eax, %edx
    shl     $13, %edx
    xor     %edx, %eax
    mov     %eax, %edx
    shr     $17, %edx
    xor     %edx, %eax
    mov     %eax, %edx
    shl     $5, %edx
    xor     %edx, %eax
    dec     %ecx
    jnz     1b
    mov     $0x500, %dx             # EXIT hypercall: AL=0
    xor     %eax, %eax
    out     %al, %dx
    hlt                             # not reached
"""

KINDS = {"native": (NATIVE_GUEST, Mode.LONG, 20_000_000), "emulated": (EMULATED_GUEST, Mode.REAL, 20_000)}
TARGET = 1.8
ONE, SAME_PROCESS, TWO_PROCESSES = "1 guest", "2 guests, 1 proc", "2 guests, 2 procs"


@dataclass
class Timing:
    wall: float  # seconds from the first guest's start to the last one's end
    per_guest: list[float]


def build(kind: str, iterations: int) -> tuple[bytes, Path, Mode]:
    source, mode, _ = KINDS[kind]
    image = build_guest(f"parallel_{kind}", source, mode, {"ITERATIONS": iterations})
    return image, BUILD_DIR / f"parallel_{kind}.bin", mode


def in_one_process(kvm: Kvm, image: bytes, mode: Mode, guests: int) -> Timing:
    run = run_inprocess(kvm, [(f"g{i}", image, mode) for i in range(guests)])
    return Timing(run.wall, [r.wall_seconds for r in run.results])


def in_two_processes(path: Path, mode: Mode) -> Timing:
    """Two worker processes, one guest each; their run loops are timed on the shared monotonic clock."""
    argv = [sys.executable, __file__, "--worker", str(path), mode.value]
    workers = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO) for _ in range(2)]
    spans = []
    for worker in workers:
        out, _ = worker.communicate()
        if worker.returncode != 0:
            raise RuntimeError(f"worker failed with status {worker.returncode}")
        spans.append(json.loads(out))
    wall = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    return Timing(wall, [s["end"] - s["start"] for s in spans])


def worker(path: str, mode: str) -> None:
    """--worker: run one guest in this process and print when its run loop started and ended."""
    kvm = Kvm()
    image = Path(path).read_bytes()
    start = time.monotonic()
    run_inprocess(kvm, [("worker", image, Mode(mode))])
    print(json.dumps({"start": start, "end": time.monotonic()}))


def calibrate(kvm: Kvm, kind: str, seconds: float) -> int:
    """Rounds for one guest to run about `seconds` on this host."""
    trial = KINDS[kind][2]
    image, _, mode = build(kind, trial)
    in_one_process(kvm, image, mode, 1)  # warm-up
    took = min(in_one_process(kvm, image, mode, 1).wall for _ in range(3))
    return max(trial, int(trial * seconds / took))


def primes_64_ms(kvm: Kvm) -> float | None:
    path = REPO / "guests" / "build" / "primes_64.bin"
    if not path.exists():
        return None
    run = run_inprocess(kvm, [("primes_64", path.read_bytes(), Mode.LONG)])
    return run.results[0].wall_seconds * 1e3


def wait_for_idle(limit: float, idle: float = 0.2) -> None:
    """Wait until other work keeps fewer than `idle` CPUs busy, at most `limit` seconds.

    On a shared host a test run elsewhere can take a core for a minute;
    starting in a quiet moment makes the ratios about minikvm, not about it.
    """
    deadline = time.monotonic() + limit
    while (busy := busy_cpus()) >= idle:
        if time.monotonic() >= deadline:
            print(f"the host is still busy ({busy:.2f} CPUs) after waiting {limit:g} s; measuring anyway")
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="run time of one guest alone (1.5)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per configuration (5)")
    parser.add_argument("--wait-idle", type=float, default=60, metavar="SECONDS",
                        help="first wait up to this long for the other work on the host to settle (60)")
    parser.add_argument("--worker", nargs=2, metavar=("IMAGE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    wait_for_idle(args.wait_idle)
    facts = host_facts()
    busy, cpus = facts.busy_cpus_before, facts.cpus
    print(f"host: {cpus} CPUs, load average {facts.loadavg_before[0]:.2f} (1 min), "
          f"{busy:.2f} CPUs busy with other work just before the run")
    kvm = Kvm()
    primes_ms = primes_64_ms(kvm)
    if primes_ms is not None:
        print(f"primes_64 runs {primes_ms:.1f} ms: too short to overlap two runs reliably; using a loop guest")

    rows = []
    results: dict[str, dict[str, object]] = {}
    ratios: dict[str, float] = {}  # "kind: configuration" -> throughput / 1 guest's
    for kind in KINDS:
        iterations = calibrate(kvm, kind, args.seconds)
        image, path, mode = build(kind, iterations)
        timings: dict[str, list[Timing]] = {ONE: [], SAME_PROCESS: [], TWO_PROCESSES: []}
        # Interleaved, so drifting load elsewhere on the host hits every configuration alike.
        for _ in range(args.repeats):
            timings[ONE].append(in_one_process(kvm, image, mode, 1))
            timings[SAME_PROCESS].append(in_one_process(kvm, image, mode, 2))
            timings[TWO_PROCESSES].append(in_two_processes(path, mode))
        # Other work on the host can only slow a run down, so the best run of
        # each configuration is the closest to what it can do; the median is
        # kept alongside to show how much the host got in the way.
        base_best = max(iterations / t.wall for t in timings[ONE])
        base_median = median([iterations / t.wall for t in timings[ONE]])
        results[kind] = {"iterations_per_guest": iterations}
        for config, got in timings.items():
            guests = 1 if config == ONE else 2
            throughput = [guests * iterations / t.wall for t in got]
            label = f"{kind}: {config}"
            ratios[label] = max(throughput) / base_best
            ratio_median = median(throughput) / base_median
            # Each guest's own run-loop time, against the wall: guests running side
            # by side each take about the whole wall; guests taking turns (a GIL
            # held across KVM_RUN) would each take only their share of it.
            best = min(got, key=lambda t: t.wall)
            each = sum(best.per_guest) / len(best.per_guest)
            rows.append([label, f"{best.wall:.3f}", f"{each:.3f}", f"{max(throughput) / 1e6:.4g}",
                         f"{ratios[label]:.2f}", f"{ratio_median:.2f}"])
            results[kind][config] = {
                "wall_seconds": spread([t.wall for t in got]),
                "per_guest_seconds": [t.per_guest for t in got],
                "throughput_rounds_per_s": spread(throughput),
                "ratio_to_1_guest_best": ratios[label],
                "ratio_to_1_guest_median": ratio_median,
            }
    kvm.close()
    busy_after = busy_cpus()

    print_table(f"Throughput, best of {args.repeats} (xorshift rounds; 1 guest alone ≈ {args.seconds:g} s)",
                ["kind: configuration", "wall s", "per guest s", "M rounds/s", "÷ 1 guest", "(median)"], rows)
    print(f"CPUs busy with other work: {busy:.2f} before, {busy_after:.2f} after the run (of {cpus}); "
          f"the '{TWO_PROCESSES}' rows show what this host gave two guests with no Python threads involved; "
          "'per guest s' near 'wall s' means the guests ran side by side rather than taking turns")

    targets = {}
    for kind in KINDS:
        ratio, reference = ratios[f"{kind}: {SAME_PROCESS}"], ratios[f"{kind}: {TWO_PROCESSES}"]
        met = ratio >= TARGET
        targets[kind] = {"value": ratio, "two_process_reference": reference, "target": f">= {TARGET}",
                         "met": met, "free_cpus_before": cpus - busy}
        print(f"{kind}: 2 guests in one process ÷ 1 guest = {ratio:.2f} (target >= {TARGET}: {verdict(met)}); "
              f"two processes reach {reference:.2f}, so minikvm gets {ratio / reference:.0%} of what this host allows")

    path = write_json("parallel", {"host": facts, "busy_cpus_after": busy_after, "primes_64_ms": primes_ms,
                                   "repeats": args.repeats, "results": results, "targets": targets})
    chart = bar_chart("parallel", f"Throughput vs one guest ({busy:.1f} of {cpus} CPUs busy elsewhere before)",
                      [("throughput ÷ 1 guest (2.0 = two full cores)", list(ratios), list(ratios.values()))])
    print(f"\nwrote {path.relative_to(REPO)} and {chart.relative_to(REPO)}")


if __name__ == "__main__":
    main()
