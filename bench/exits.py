"""Exit overhead: what one port-I/O exit costs in minikvm against a minimal C VMM.

A real-mode guest does COUNT `out %al, %dx` in a loop, then HLT. The same
flat binary runs under bench/ref_vmm.c (C, every OUT one exit) and under
minikvm in this process (the run loop only is timed), interleaved, each
REPEATS times; the medians are compared.

Cases:
  nop      the loop with a NOP where the OUT was: the guest's own cost per
           iteration (CPL0 code is emulated on some hosts), for both VMMs
  post     OUT to port 0x80, a null device in minikvm: the bare exit cost
  putchar  the PUTCHAR hypercall (port 0x500, AL=1, BL='.'): an exit that
           reads a register and produces output
  uart     OUT to the 16550's THR (0x3F8). minikvm registers the port for
           KVM's coalesced PIO, so most characters need no exit; the C VMM
           takes an exit per character. A last row runs minikvm with the
           coalescing switched off, to show its uncoalesced UART path.

Targets (the issue): minikvm/C per exit <= 1.15 without coalescing, and the
coalesced UART >= 5x faster per character than the uncoalesced C loop.

usage: python bench/exits.py [--count N] [--repeats R]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH_DIR,
    Kvm,
    Machine,
    Mode,
    bar_chart,
    build_c,
    build_guest,
    host_facts,
    median,
    print_table,
    run_inprocess,
    spread,
    verdict,
    write_json,
)

# The guest. `--defsym` picks the variant: COUNT iterations, PORT, AL=VALUE,
# BL=ARG, and EXIT=0 for the NOP loop. OUT and NOP are both one byte, so every
# variant runs the same instructions at the same addresses.
GUEST = r"""
    .code16
    .text
    .globl _start
_start:
    mov     $COUNT, %ecx        # 32-bit count: COUNT may exceed 65535
    mov     $PORT, %dx
    mov     $VALUE, %al
    mov     $ARG, %bl
1:
.if EXIT
    out     %al, %dx            # one exit (unless KVM coalesces this port)
.else
    nop
.endif
    dec     %ecx
    jnz     1b
    hlt                         # IF=0: both VMMs stop here
"""

PUTCHAR = 1
DOT = ord(".")
COM1_THR = 0x3F8
TARGET_RATIO = 1.15  # minikvm / C per exit, no coalescing
TARGET_UART_SPEEDUP = 5.0  # C per character / minikvm coalesced per character


@dataclass(frozen=True)
class Case:
    name: str
    port: int
    value: int
    arg: int
    exit: bool
    sync_regs: bool  # the C VMM needs the GPRs in kvm_run to read BL
    prints: bool  # every iteration produces one byte of output

    def symbols(self, count: int) -> dict[str, int]:
        return {"COUNT": count, "PORT": self.port, "VALUE": self.value, "ARG": self.arg, "EXIT": int(self.exit)}


CASES = [
    Case("nop", 0x80, 0, 0, exit=False, sync_regs=False, prints=False),
    Case("post", 0x80, 0, 0, exit=True, sync_regs=False, prints=False),
    Case("putchar", 0x500, PUTCHAR, DOT, exit=True, sync_regs=True, prints=True),
    Case("uart", COM1_THR, DOT, 0, exit=True, sync_regs=False, prints=True),
]


@dataclass
class Sample:
    seconds: float
    io_exits: int  # port-I/O exits the VMM handled
    output: int  # bytes the guest printed
    vmm_share: float = 0.0  # minikvm: fraction of the loop spent outside KVM_RUN
    coalesced: int = 0  # minikvm: writes KVM buffered without an exit


def run_c(ref_vmm: Path, image: Path, sync_regs: bool) -> Sample:
    argv = [str(ref_vmm), str(image)] + (["--sync-regs"] if sync_regs else [])
    line = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    fields = dict(item.split("=") for item in line.split())
    return Sample(int(fields["ns"]) / 1e9, int(fields["io"]), int(fields["bytes"]))


def _no_coalescing(machine: Machine) -> None:
    # Take COM1 out of KVM's coalesced zone: every THR write is an exit again.
    assert machine.vm is not None
    machine.vm.unregister_coalesced_pio(COM1_THR, 1)


def run_minikvm(kvm: Kvm, image: bytes, coalesce: bool = True) -> Sample:
    run = run_inprocess(kvm, [("exits", image, Mode.REAL)], prepare=None if coalesce else _no_coalescing)
    result = run.results[0]
    stats = result.stats
    busy = stats.guest_seconds + stats.vmm_seconds
    io_exits = stats.by_reason.get("IoExit", 0)
    # result.wall_seconds is the run loop alone (Machine.run), without thread start-up.
    return Sample(result.wall_seconds, io_exits, len(run.outputs[0]),
                  stats.vmm_seconds / busy if busy else 0.0, stats.coalesced)


def per_iteration_us(samples: list[Sample], count: int) -> list[float]:
    return [s.seconds / count * 1e6 for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="OUTs per run (20000)")
    parser.add_argument("--repeats", type=int, default=7, help="runs per case and VMM; medians are compared (7)")
    args = parser.parse_args()
    count = args.count
    facts = host_facts()

    ref_vmm = build_c("ref_vmm", BENCH_DIR / "ref_vmm.c")
    kvm = Kvm()
    samples: dict[str, list[Sample]] = {}
    for case in CASES:
        image = build_guest(f"exits_{case.name}", GUEST, Mode.REAL, case.symbols(count))
        image_path = BENCH_DIR / "build" / f"exits_{case.name}.bin"
        runs: dict[str, list[Sample]] = {"c": [], "minikvm": []}
        if case.name == "uart":
            runs["minikvm_uncoalesced"] = []
        run_minikvm(kvm, image)  # warm-up: first-touch page faults, imports, caches
        # Interleaved, so a burst of load elsewhere on the host hits both VMMs alike.
        for _ in range(args.repeats):
            runs["c"].append(run_c(ref_vmm, image_path, case.sync_regs))
            runs["minikvm"].append(run_minikvm(kvm, image))
            if "minikvm_uncoalesced" in runs:
                runs["minikvm_uncoalesced"].append(run_minikvm(kvm, image, coalesce=False))
        for vmm, got in runs.items():
            for sample in got:
                # The benchmark is wrong, not slow, if the guest did something else.
                expected_output = count if case.prints else 0
                if sample.output != expected_output:
                    raise RuntimeError(f"{case.name}/{vmm}: guest printed {sample.output} bytes, "
                                       f"expected {expected_output}")
            samples[f"{case.name}/{vmm}"] = got
    kvm.close()

    us = {key: median(per_iteration_us(got, count)) for key, got in samples.items()}
    loop_c, loop_m = us["nop/c"], us["nop/minikvm"]
    rows = []
    results: dict[str, object] = {}
    for key, got in samples.items():
        case, vmm = key.split("/")
        exits = median([s.io_exits for s in got])
        c_us = us[f"{case}/c"]
        ratio = us[key] / c_us
        # Net: the exit alone, with the guest's own loop cost (the NOP case) taken off.
        net = us[key] - (loop_c if vmm == "c" else loop_m)
        net_ratio = net / (c_us - loop_c) if case != "nop" else float("nan")
        vmm_share = median([s.vmm_share for s in got]) if vmm != "c" else None
        rows.append([key, f"{exits:.0f}", f"{us[key]:.2f}", f"{ratio:.2f}",
                     f"{net:.2f}" if case != "nop" else "-",
                     f"{net_ratio:.2f}" if case != "nop" else "-",
                     f"{100 * vmm_share:.0f}%" if vmm_share is not None else "-"])
        results[key] = {
            "us_per_iteration": spread(per_iteration_us(got, count)),
            "io_exits": exits,
            "coalesced_writes": median([s.coalesced for s in got]),
            "ratio_to_c": ratio,
            "net_us_per_exit": net if case != "nop" else None,
            "net_ratio_to_c": net_ratio if case != "nop" else None,
            "vmm_share": vmm_share,
        }
    print_table(f"Port-I/O exit cost, {count} OUTs per run, median of {args.repeats} runs "
                f"(load average before: {facts['loadavg_before'][0]:.2f})",
                ["case/VMM", "I/O exits", "µs/iter", "÷ C", "net µs/exit", "net ÷ C", "in VMM"], rows)
    print("µs/iter: run-loop wall time / OUTs; net: minus the same VMM's NOP-loop time per iteration "
          f"(C {loop_c:.2f} µs, minikvm {loop_m:.2f} µs); in VMM: minikvm's time outside KVM_RUN")

    exit_ratio = max(us["post/minikvm"] / us["post/c"], us["putchar/minikvm"] / us["putchar/c"])
    uart_speedup = us["uart/c"] / us["uart/minikvm"]
    targets = {
        "exit_ratio": {"value": exit_ratio, "target": f"<= {TARGET_RATIO}", "met": exit_ratio <= TARGET_RATIO},
        "uart_speedup": {"value": uart_speedup, "target": f">= {TARGET_UART_SPEEDUP}",
                         "met": uart_speedup >= TARGET_UART_SPEEDUP},
    }
    print(f"\nminikvm ÷ C per exit (worst of post, putchar): {exit_ratio:.2f}  "
          f"target <= {TARGET_RATIO}: {verdict(exit_ratio <= TARGET_RATIO)}")
    print(f"UART per character, C (exit each) ÷ minikvm (coalesced): {uart_speedup:.1f}x  "
          f"target >= {TARGET_UART_SPEEDUP:g}x: {verdict(uart_speedup >= TARGET_UART_SPEEDUP)}")

    path = write_json("exits", {"host": facts, "count": count, "repeats": args.repeats,
                                "results": results, "targets": targets})
    labels = list(samples)
    chart = bar_chart("exits", f"minikvm vs C VMM: µs per loop iteration ({count} OUTs, median)", [
        ("µs per iteration (lower is better)", labels, [us[k] for k in labels]),
        ("÷ C VMM, same case", labels, [us[k] / us[k.split("/")[0] + "/c"] for k in labels]),
    ])
    print(f"\nwrote {path.relative_to(BENCH_DIR.parent)} and {chart.relative_to(BENCH_DIR.parent)}")


if __name__ == "__main__":
    main()
