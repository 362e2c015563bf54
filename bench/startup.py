"""Start-up cost: wall time and peak RSS of `minikvm run GUEST --quiet`, process start to exit.

Each command is run RUNS times (round robin, after two warm-up runs each)
by bench/spawn.c, a small C launcher that forks, execs and reaps it with
wait4 and reports the wall time and the child's peak RSS (from a Python
parent the RSS would start at the parent's own size; see spawn.c). The wall
time runs from fork to reap, so it includes the interpreter, imports, the
KVM probe, building the VM, the run and the teardown.

Commands:
  python -c pass     the bare interpreter of the venv: the baseline
  import minikvm     the modules the console script imports, nothing run
  minikvm minimal    a single HLT
  minikvm hello      'Hello, KVM!' through the hypercall port
  ... stdin idle     hello again, with stdin an open pipe that never
                     delivers a byte, as a terminal nobody types at is

Targets (the issue): median <= 25 ms and peak RSS <= 30 MB for minimal and
hello.

Environment: the children get this process's environment without
PYTHONUNBUFFERED and PYTHONDONTWRITEBYTECODE, and with PYTHONPYCACHEPREFIX
under bench/build/, so bytecode is compiled once (in the warm-up) and read
afterwards, as on a user's machine, wherever the checkout's own __pycache__
is missing or stale. `--as-is` keeps the environment untouched instead.

usage: python bench/startup.py [--runs N] [--as-is]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH_DIR,
    BUILD_DIR,
    REPO,
    VENV_BIN,
    bar_chart,
    bench_env,
    build_c,
    host_facts,
    median,
    print_table,
    spread,
    verdict,
    write_json,
)

TARGET_MS = 25.0
TARGET_MIB = 30.0
PYTHON = str(VENV_BIN / "python")
MINIKVM = str(VENV_BIN / "minikvm")



@dataclass(frozen=True)
class Command:
    argv: list[str]
    expect: bytes = b""  # output it must print
    targets: bool = True  # whether the targets apply
    idle_stdin: bool = False  # stdin an open, silent pipe instead of /dev/null


COMMANDS = {
    "python -c pass": Command([PYTHON, "-c", "pass"], targets=False),
    "import minikvm": Command([PYTHON, "-c", "import minikvm.cli, minikvm.machine, minikvm.console"],
                              targets=False),
    "minikvm run minimal": Command([MINIKVM, "run", "minimal", "--quiet"]),
    "minikvm run hello": Command([MINIKVM, "run", "hello", "--quiet"], b"Hello, KVM!"),
    "minikvm run hello, stdin idle": Command([MINIKVM, "run", "hello", "--quiet"], b"Hello, KVM!", idle_stdin=True),
}


@dataclass
class Sample:
    ms: float
    max_rss_mib: float


_REPORT = re.compile(rb"spawn: ns=(\d+) maxrss_kb=(\d+) status=(\d+)")


def run_once(spawn: Path, command: Command, env: dict[str, str]) -> Sample:
    out_path, err_path = BUILD_DIR / "startup.out", BUILD_DIR / "startup.err"
    # The idle pipe's write end stays open here until the child is reaped:
    # the child sees a stdin that is neither data nor end of file.
    stdin, feeder = os.pipe() if command.idle_stdin else (os.open(os.devnull, os.O_RDONLY), -1)
    try:
        with out_path.open("wb") as out, err_path.open("wb") as err:
            os.waitpid(os.posix_spawn(str(spawn), [str(spawn), *command.argv], env, file_actions=[
                (os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, err.fileno(), 2)]), 0)
    finally:
        os.close(stdin)
        if feeder >= 0:
            os.close(feeder)
    report = _REPORT.search(err_path.read_bytes())
    output = out_path.read_bytes()
    if report is None or int(report.group(3)) != 0 or command.expect not in output:
        raise RuntimeError(f"{' '.join(command.argv)} failed: {err_path.read_bytes()[-300:]!r}, "
                           f"output {output[:80]!r}")
    return Sample(int(report.group(1)) / 1e6, int(report.group(2)) / 1024)  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command (15)")
    parser.add_argument("--as-is", action="store_true", help="keep the environment untouched")
    args = parser.parse_args()
    facts = host_facts()
    env = bench_env(args.as_is)
    spawn = build_c("spawn", BENCH_DIR / "spawn.c")

    for command in COMMANDS.values():
        for _ in range(2):  # warm-up: page cache, bytecode cache
            run_once(spawn, command, env)
    samples: dict[str, list[Sample]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        # Round robin, so drift in the host's load touches every command alike.
        for name, command in COMMANDS.items():
            samples[name].append(run_once(spawn, command, env))

    base_ms = median([s.ms for s in samples["python -c pass"]])
    base_mib = median([s.max_rss_mib for s in samples["python -c pass"]])
    rows = []
    results: dict[str, object] = {}
    targets: dict[str, object] = {}
    for name, got in samples.items():
        ms, mib = median([s.ms for s in got]), median([s.max_rss_mib for s in got])
        rows.append([name, f"{ms:.1f}", f"{min(s.ms for s in got):.1f}", f"{ms / base_ms:.2f}",
                     f"{mib:.1f}", f"{mib / base_mib:.2f}"])
        results[name] = {"argv": COMMANDS[name].argv, "idle_stdin": COMMANDS[name].idle_stdin,
                         "ms": spread([s.ms for s in got]),
                         "max_rss_mib": spread([s.max_rss_mib for s in got]),
                         "ratio_ms": ms / base_ms, "ratio_rss": mib / base_mib}
        if COMMANDS[name].targets:
            targets[name] = {"median_ms": ms, "ms_met": ms <= TARGET_MS, "max_rss_mib": mib,
                             "rss_met": mib <= TARGET_MIB}
    print_table(f"Start-up, process start to exit, median of {args.runs} runs "
                f"({'environment as is' if args.as_is else 'bytecode cached, buffered stdout'}; "
                f"load average before: {facts.loadavg_before[0]:.2f})",
                ["command", "ms", "min ms", "÷ python", "peak RSS MiB", "÷ python"], rows)
    for name, target in targets.items():
        assert isinstance(target, dict)
        print(f"{name}: {target['median_ms']:.1f} ms (target <= {TARGET_MS:g}: {verdict(target['ms_met'])}), "
              f"{target['max_rss_mib']:.1f} MiB (target <= {TARGET_MIB:g}: {verdict(target['rss_met'])})")

    path = write_json("startup", {"host": facts, "runs": args.runs, "environment_as_is": args.as_is,
                                  "results": results, "targets": targets})
    names = list(samples)
    chart = bar_chart("startup", f"Start-up to exit, median of {args.runs} runs", [
        ("wall ms (target 25 for minikvm run)", names, [median([s.ms for s in samples[n]]) for n in names]),
        ("peak RSS MiB (target 30)", names, [median([s.max_rss_mib for s in samples[n]]) for n in names]),
    ])
    print(f"\nwrote {path.relative_to(REPO)} and {chart.relative_to(REPO)}")


if __name__ == "__main__":
    main()
