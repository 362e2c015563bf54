"""Shared helpers for minikvm's benchmarks: build tiny guests, run them, report.

Every benchmark compares minikvm with a baseline measured in the same run and
reports the ratio, so a slow or noisy machine shifts both sides alike. Nothing
here asserts on time: the numbers are printed, written to
bench/results/<name>.json and drawn to bench/results/<name>.png.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BUILD_DIR = BENCH_DIR / "build"
RESULTS_DIR = BENCH_DIR / "results"
VENV_BIN = REPO / ".venv" / "bin"

# Run from a checkout without installing: `python bench/x.py` must import the
# minikvm next to it, not some other copy.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from minikvm.arch.x86.state import Mode  # noqa: E402
from minikvm.kvm.system import Kvm  # noqa: E402
from minikvm.machine import GuestSpec, Machine, MachineConfig, RunResult, run_machines  # noqa: E402

# How each guest mode is assembled and linked: the same recipe as
# guests/Makefile (real-mode code at 0, the others at minikvm's 0x1000).
_TOOLCHAIN = {
    Mode.REAL: (["--32"], ["-m", "elf_i386", "-Ttext=0x0"]),
    Mode.LONG: (["--64"], ["-m", "elf_x86_64", "-Ttext=0x1000"]),
}


# --- building ----------------------------------------------------------------


def _run_tool(argv: Sequence[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr}")


def build_guest(name: str, source: str, mode: Mode, symbols: dict[str, int] | None = None) -> bytes:
    """Assemble `source` (GNU as) into a flat binary under bench/build/ and return its bytes.

    `symbols` become `--defsym NAME=VALUE`, which is how one source yields the
    benchmark's variants (loop count, port) without text templating.
    """
    as_flags, ld_flags = _TOOLCHAIN[mode]
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    src, obj = BUILD_DIR / f"{name}.S", BUILD_DIR / f"{name}.o"
    elf, binary = BUILD_DIR / f"{name}.elf", BUILD_DIR / f"{name}.bin"
    src.write_text(source)
    defsyms = [arg for key, value in (symbols or {}).items() for arg in ("--defsym", f"{key}={value}")]
    _run_tool(["as", *as_flags, "--fatal-warnings", "--noexecstack", *defsyms, "-o", str(obj), str(src)])
    _run_tool(["ld", *ld_flags, "--fatal-warnings", "-e", "_start", "-o", str(elf), str(obj)])
    _run_tool(["objcopy", "-O", "binary", "-j", ".text", str(elf), str(binary)])
    return binary.read_bytes()


def build_c(name: str, source: Path) -> Path:
    """Compile a C file with gcc -O2 into bench/build/<name>."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    out = BUILD_DIR / name
    _run_tool(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(source)])
    return out


# --- running minikvm as a command ---------------------------------------------


def bench_env(as_is: bool = False) -> dict[str, str]:
    """The environment for timed `minikvm` and `python` children.

    Without PYTHONUNBUFFERED (it makes every guest byte a write(2)) and
    PYTHONDONTWRITEBYTECODE, and with a bytecode cache under bench/build/:
    a start then reads compiled modules, as on a user's machine, even where
    the checkout's own __pycache__ is missing or stale. `as_is` keeps the
    environment untouched.
    """
    env = dict(os.environ)
    if not as_is:
        env.pop("PYTHONUNBUFFERED", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(BUILD_DIR / "pycache")
    return env


# --- running guests in this process --------------------------------------------


def default_memory(mode: Mode) -> int:
    """The RAM `minikvm run` gives a guest of this mode (1 MiB real, 4 MiB otherwise)."""
    from minikvm.boot import layout

    return layout.REAL_MEMORY if mode is Mode.REAL else layout.PM_MEMORY


def make_machine(kvm: Kvm, name: str, image: bytes, mode: Mode, output: Callable[[bytes], None]) -> Machine:
    spec = GuestSpec(name=name, path=str(BUILD_DIR / f"{name}.bin"), image=image, mode=mode,
                     memory=default_memory(mode))
    return Machine(MachineConfig(spec), kvm, output)


@dataclass
class InProcessRun:
    results: list[RunResult]
    outputs: list[bytes]  # what each guest printed
    wall: float  # seconds in run_machines, all guests together


def run_inprocess(kvm: Kvm, guests: Sequence[tuple[str, bytes, Mode]],
                  prepare: Callable[[Machine], None] | None = None) -> InProcessRun:
    """Run guests together through `run_machines`, as `minikvm run a b` does.

    Only `run_machines` is timed: building the VMs (and tearing them down) is
    outside the clock. `prepare` may adjust each machine before it runs.
    """
    sinks: list[bytearray] = [bytearray() for _ in guests]
    machines: list[Machine] = []
    try:
        for (name, image, mode), sink in zip(guests, sinks, strict=True):
            machines.append(make_machine(kvm, name, image, mode, sink.extend))
            if prepare is not None:
                prepare(machines[-1])
        started = time.perf_counter()
        results = run_machines(machines)
        wall = time.perf_counter() - started
    finally:
        for machine in machines:
            machine.close()
    for result in results:
        if not result.stop.clean:
            raise RuntimeError(f"benchmark guest {result.name} did not end cleanly: {result.summary()}\n"
                               + "\n".join(result.report))
    return InProcessRun(results, [bytes(sink) for sink in sinks], wall)


# --- statistics and host facts -------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements, for the JSON."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def busy_cpus(seconds: float = 1.0) -> float:
    """How many CPUs other work kept busy over `seconds` (from /proc/stat), e.g. 0.97 of 2.

    More direct than the load average, which lags by a minute and counts
    runnable threads rather than CPU time.
    """

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


@dataclass(frozen=True)
class HostFacts:
    """What a reader of the JSON needs to compare runs across machines."""

    cpus: int
    loadavg_before: tuple[float, float, float]
    busy_cpus_before: float  # CPUs other work kept busy in the second before the benchmark
    kernel: str
    python: str
    time: str


def host_facts() -> HostFacts:
    return HostFacts(cpus=os.cpu_count() or 1, loadavg_before=load_average(), busy_cpus_before=busy_cpus(),
                     kernel=platform.release(), python=platform.python_version(),
                     time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


# --- reporting -------------------------------------------------------------------


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain-text table: first column left-aligned, the numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    print(f"\n{title}")
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def write_json(name: str, data: dict[str, object]) -> Path:
    """bench/results/<name>.json; dataclasses in `data` (HostFacts) become objects."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=dataclasses.asdict) + "\n")
    return path


def bar_chart(name: str, title: str, panels: Sequence[tuple[str, Sequence[str], Sequence[float]]]) -> Path:
    """One horizontal bar chart per panel (ylabel, bar labels, values) side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a benchmark host
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 0.6 * max(len(p[1]) for p in panels) + 1.8),
                             squeeze=False)
    for ax, (xlabel, labels, values) in zip(axes[0], panels, strict=True):
        positions = range(len(labels))
        bars = ax.barh(positions, values, color="tab:blue")
        ax.set_yticks(list(positions), labels)
        ax.invert_yaxis()  # first row on top, as in the printed table
        ax.set_xlabel(xlabel)
        ax.bar_label(bars, fmt="%.3g", padding=3)
        ax.margins(x=0.2)
    fig.suptitle(title)
    fig.tight_layout()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"
