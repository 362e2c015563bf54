"""Create, run and destroy small VMs over and over in one process, and measure what is left behind.

Each cycle builds a Machine on the accelerator, runs it to its stop, writes
its stop report (as the CLI does) and closes it. Before the first measured
cycle and after the last, the process's open file descriptors
(/proc/self/fd), threads (Python's and the kernel's, /proc/self/task) and
RSS are taken. `python -m tests.robustness.lifecycle --accel kvm --cycles N`
prints them as JSON (used by test_lifecycle.py and bench/soak.py).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from minikvm.arch.x86.state import Mode  # noqa: E402

from .randguest import fd_count, kvm_can_run, make_accel, peak_rss_bytes, rss_bytes  # noqa: E402

_HC = (0xBA, 0x00, 0x05)  # mov dx, 0x500 (real mode)
PRINT = bytes([*_HC, 0xB0, 0x01, 0xB3, ord("o"), 0xEE, 0xB3, ord("k"), 0xEE, 0xB3, 0x0A, 0xEE,
               0xB0, 0x00, 0xEE, 0xF4])  # putchar 'o','k','\n'; exit hypercall
SPIN = bytes([0xEB, 0xFE])  # jmp $
ECHO = bytes([*_HC, 0xB0, 0x02, 0xEE, 0xEC, 0x3C, 0xFF, 0x74, 0xF8, 0x88, 0xC3, 0xB0, 0x01, 0xEE, 0xEB, 0xF1])
HALT_IF0 = bytes([0xFA, 0xF4])  # cli; hlt (with interrupts: KVM's in-kernel irqchip keeps HLT inside the kernel)
TRIPLE_32 = bytes([0xCD, 0x80, 0xF4])  # int 0x80 through an empty IDT: #GP, #DF, shutdown

# name -> (image, mode, interrupts, input (None: open), timeout, stop request after seconds)
CYCLES: dict[str, tuple[bytes, Mode, bool, bytes | None, float, float | None]] = {
    "print": (PRINT, Mode.REAL, False, b"", 5.0, None),
    "timeout": (SPIN, Mode.REAL, False, None, 0.05, None),
    "fault": (TRIPLE_32, Mode.PROTECTED, False, b"", 5.0, None),
    "input": (ECHO, Mode.REAL, False, b"ab", 5.0, None),
    "ctrl-c": (SPIN, Mode.REAL, False, None, 5.0, 0.02),
    "interrupts": (HALT_IF0, Mode.REAL, True, b"", 5.0, None),
}
PLAIN = ("print", "timeout", "fault", "input", "ctrl-c")


def task_count() -> int:
    """Kernel threads of this process (Unicorn or ctypes could start some Python never sees)."""
    return len(os.listdir("/proc/self/task"))


@dataclass
class Sample:
    fds: int
    threads: int
    tasks: int
    rss: int

    @classmethod
    def now(cls) -> Sample:
        """Taken after a garbage collection and malloc_trim(0): the RSS is live memory, not heap that
        glibc keeps for reuse (Unicorn's create/destroy leaves 10-20 MiB of that, once)."""
        gc.collect()
        trim_heap()
        return cls(fd_count(), threading.active_count(), task_count(), rss_bytes())


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc's malloc_trim), so RSS measures what is in use."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: RSS then includes free heap


@dataclass
class LifecycleResult:
    accel: str
    cycles: int
    mix: list[str]
    before: Sample
    after: Sample
    peak_rss: int
    seconds: float
    stops: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # cycles that did not stop as expected

    @property
    def rss_growth(self) -> float:
        return (self.after.rss - self.before.rss) / self.before.rss


def one_cycle(accel: object, name: str) -> str:
    """Build, run, report and close one machine; returns its stop kind."""
    from minikvm.debug.explain import explain
    from minikvm.debug.report import stop_line
    from minikvm.devices.input import InputBuffer
    from minikvm.machine import GuestSpec, Machine, MachineConfig, run_machines
    from minikvm.stop import StopKind, StopReason

    image, mode, interrupts, stdin, timeout, stop_after = CYCLES[name]
    memory = 1 << 20 if mode is Mode.REAL else 4 << 20
    buffer = InputBuffer()
    if stdin is not None:
        buffer.feed(stdin)
        buffer.close()
    out = bytearray()
    spec = GuestSpec(name, f"<{name}>", image, mode, memory, interrupts=interrupts)
    machine = Machine(MachineConfig(spec, input_grace=0.02), accel, out.extend, buffer)  # type: ignore[arg-type]
    timer = None
    try:
        if stop_after is not None:
            timer = threading.Timer(stop_after, machine.request_stop,
                                    (StopReason(StopKind.INTERRUPTED, "interrupted (lifecycle)"),))
            timer.start()
        result = run_machines([machine], timeout=timeout)[0]
        lines = [stop_line(result), *explain(machine, result)]
        assert lines
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
        machine.close()
    return result.stop.kind.value


# The stops each cycle may end with. `int 0x80` through an empty IDT is a triple fault, except where
# KVM's emulator (kvm-pvm runs CPL0 code in it) cannot emulate the INT: a KVM internal error.
EXPECTED = {"print": {"exit hypercall"}, "timeout": {"timeout"}, "fault": {"triple fault", "internal error"},
            "input": {"end of input"}, "ctrl-c": {"interrupted"}, "interrupts": {"halt"}}


def run_cycles(accel_name: str, cycles: int, mix: tuple[str, ...] = PLAIN, warmup: int = 10) -> LifecycleResult:
    """`warmup` cycles (imports, probes and caches settle), then `cycles` measured ones."""
    usable = [name for name in mix if accel_name == "emu" or kvm_can_run(CYCLES[name][1].value, CYCLES[name][2])]
    accel = make_accel(accel_name)
    try:
        for index in range(warmup):
            one_cycle(accel, usable[index % len(usable)])
        before = Sample.now()
        started = time.monotonic()
        stops: Counter[str] = Counter()
        failures = []
        for index in range(cycles):
            name = usable[index % len(usable)]
            stop = one_cycle(accel, name)
            stops[stop] += 1
            if stop not in EXPECTED[name]:
                failures.append(f"cycle {index} ({name}): stopped by {stop}, expected {' or '.join(EXPECTED[name])}")
        seconds = time.monotonic() - started
        after = Sample.now()
    finally:
        accel.close()  # type: ignore[attr-defined]
    return LifecycleResult(accel_name, cycles, usable, before, after, peak_rss_bytes(), seconds, dict(stops),
                           failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.robustness.lifecycle")
    parser.add_argument("--accel", choices=("kvm", "emu"), required=True)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--mix", default=",".join(PLAIN), help=f"comma-separated cycle kinds from {', '.join(CYCLES)}")
    args = parser.parse_args(argv)
    result = run_cycles(args.accel, args.cycles, tuple(args.mix.split(",")))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
