"""The long robustness run (`make soak`): random guests, lifecycles, floods and the gdb stub, at length.

- random guests: GUESTS (30,000) from tests/robustness/randguest.py, split over
  the accelerators this host has, in worker processes (two at a time), each
  with a 0.2 s timeout; every run must end with a StopReason and a report,
  without a Python exception, a hang, a leaked thread or file descriptor, or
  a dead worker (a crash is listed with its seed and the command that
  reproduces it);
- lifecycle: CYCLES (1,000) create/run/destroy cycles per accelerator in one
  process (tests/robustness/lifecycle.py): file descriptors and threads before
  and after, RSS within 5%; and a shorter run of --interrupts machines;
- output floods: a guest printing FLOOD_MIB MiB through the UART, checked byte
  for byte, with the peak RSS of `minikvm`; two guests printing at once,
  FLOOD_PAIRS times, counting lines that lost their guest's prefix;
- the gdb stub: 10,000 well-formed packets with hostile arguments per accelerator.

Writes bench/results/soak.json and bench/results/soak.md and prints the table.
Nothing here fails on time; the exit status is 1 when anything crashed.

usage: python bench/soak.py [--guests 30000] [--cycles 1000] [--timeout 0.2] [--parallel 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.robustness.guests import FLOOD, assemble, counter_bytes  # noqa: E402
from tests.robustness.randguest import Job, Pool, PoolResult, Record, available_accels, kvm_can_run  # noqa: E402
from tests.robustness.support import run_cli  # noqa: E402

SEED_BASE = 1_000_000  # the soak's seeds; the short test uses 100,000 and up
RSS_TOLERANCE = 0.05
MIB = 1 << 20


def log(text: str) -> None:
    print(text, flush=True)


# --- random guests ---------------------------------------------------------------------------------------


def random_guests(accels: list[str], total: int, timeout: float, parallel: int) -> dict:
    per_accel = -(-total // len(accels))
    jobs = []
    for index, accel in enumerate(accels):
        start = SEED_BASE + index * per_accel
        for first in range(start, start + per_accel, 500):
            jobs.append(Job(accel, None, range(first, min(first + 500, start + per_accel)), timeout))
    random.Random(0).shuffle(jobs)  # both accelerators progress together
    done = [0]
    started = time.monotonic()

    def progress(record: Record) -> None:
        done[0] += 1
        if done[0] % 1000 == 0:
            rate = done[0] / (time.monotonic() - started)
            log(f"  {done[0]:>6} guests, {rate:.0f}/s")
        if record.crashed:
            log(f"  CRASH seed {record.seed} ({record.accel}, {record.mode}, {record.kind}): {record.outcome}: "
                f"{record.message[:160]}")

    result = Pool(parallel=parallel, stall=max(60.0, 20 * timeout), progress=progress).run(jobs)
    return summarize(result, accels, time.monotonic() - started, timeout)


def reproduce(record: Record, timeout: float) -> str:
    return (f"python -m tests.robustness.randguest one {record.seed} --mode {record.mode} --accel {record.accel} "
            f"--timeout {timeout:g}")


def summarize(result: PoolResult, accels: list[str], seconds: float, timeout: float) -> dict:
    by_accel = {}
    for accel in accels:
        records = [r for r in result.records if r.accel == accel]
        by_accel[accel] = {
            "runs": len(records),
            "stops": dict(Counter(r.stop if not r.crashed else f"CRASH {r.outcome}" for r in records).most_common()),
            "modes": dict(Counter(r.mode for r in records)),
            "kinds": dict(Counter(r.kind for r in records)),
            "max_rss": max((w.get("max_rss", 0) for w in result.workers if w.get("accel") == accel), default=0),
            "messages": dict(Counter(re.sub(r"0x[0-9a-f]+", "0x…", r.message) for r in records
                                     if r.stop in ("accelerator error", "unhandled exit", "internal error")
                                     ).most_common(12)),
        }
    workers = result.workers
    return {
        "runs": len(result.records),
        "seconds": round(seconds, 1),
        "timeout": timeout,
        "stops": dict(result.counts().most_common()),
        "by_accel": by_accel,
        "crashes": [{**asdict(r), "detail": r.detail[-1500:], "reproduce": reproduce(r, timeout)}
                    for r in result.crashes],
        "workers": len(workers),
        "max_rss": max((w.get("max_rss", 0) for w in workers), default=0),
        "peak_rss": max((w.get("peak_rss", 0) for w in workers), default=0),
        "fds_before": sorted({w["fds_before"] for w in workers if "fds_before" in w}),
        "fds_after": sorted({w["fds_after"] for w in workers if "fds_after" in w}),
        "fd_changes": sum(1 for w in workers if w.get("fds_after") != w.get("fds_before")),
        "thread_changes": sum(1 for w in workers if w.get("threads_after") != w.get("threads_before")),
        "slowest_run": max((r.run_seconds for r in result.records), default=0.0),
        "slowest_report": max((r.report_seconds for r in result.records), default=0.0),
    }


# --- lifecycle ---------------------------------------------------------------------------------------------


def lifecycle(accel: str, cycles: int, mix: str | None = None) -> dict:
    argv = [sys.executable, "-m", "tests.robustness.lifecycle", "--accel", accel, "--cycles", str(cycles)]
    if mix:
        argv += ["--mix", mix]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=3600)
    if done.returncode != 0:
        died = signal.Signals(-done.returncode).name if done.returncode < 0 else f"status {done.returncode}"
        return {"accel": accel, "cycles": cycles, "mix": mix, "crashed": died,
                "stderr": done.stderr.decode(errors="replace")[-1500:], "reproduce": " ".join(argv[1:])}
    result = json.loads(done.stdout)
    before, after = result["before"], result["after"]
    result["rss_growth"] = round((after["rss"] - before["rss"]) / before["rss"], 4)
    result["flat"] = (after["fds"] == before["fds"] and after["threads"] == before["threads"]
                      and after["tasks"] == before["tasks"] and result["rss_growth"] <= RSS_TOLERANCE
                      and not result["failures"])
    result["failures"] = result["failures"][:10]
    return result


# --- floods ------------------------------------------------------------------------------------------------


def floods(accels: list[str], megabytes: dict[str, int], pairs: int, build_dir: Path) -> list[dict]:
    out = []
    for accel in accels:
        if accel == "kvm" and not kvm_can_run("protected"):
            continue
        count = megabytes[accel] * MIB
        image = assemble(build_dir, f"flood-{count}", FLOOD, N=count, PORT=0x3F8)
        small = run_cli(["run", "--mode", "protected", "--accel", accel, "--quiet",
                         str(assemble(build_dir, "flood-16", FLOOD, N=16, PORT=0x3F8))])
        started = time.monotonic()
        big = run_cli(["run", "--mode", "protected", "--accel", accel, "--quiet", str(image)], timeout=1800)
        entry = {"accel": accel, "bytes": count, "seconds": round(time.monotonic() - started, 1),
                 "status": big.status, "complete_and_in_order": big.stdout == counter_bytes(count),
                 "peak_rss": big.peak_rss, "baseline_peak_rss": small.peak_rss,
                 "rss_growth": big.peak_rss - small.peak_rss}
        first = assemble(build_dir, "pair-uart", FLOOD, N=64 * 1024, PORT=0x3F8)
        second = assemble(build_dir, "pair-putchar", FLOOD, N=64 * 1024, PORT=0x500)
        bad_runs = unprefixed = 0
        for _ in range(pairs):
            both = run_cli(["run", "--mode", "protected", "--accel", accel, str(first), str(second)])
            lines = both.stdout.split(b"\n")
            missing = sum(1 for line in lines if line and not line.startswith(b"["))
            unprefixed += missing
            bad_runs += bool(missing) or both.status != 0
        entry.update({"two_guest_runs": pairs, "two_guest_runs_with_unprefixed_lines": bad_runs,
                      "unprefixed_lines": unprefixed})
        out.append(entry)
        log(f"  {accel}: {count >> 20} MiB in {entry['seconds']} s, in order: {entry['complete_and_in_order']}, "
            f"peak RSS {big.peak_rss >> 20} MiB (+{entry['rss_growth'] >> 10} KiB); two guests: {bad_runs}/{pairs} "
            f"runs with lines missing their prefix")
    return out


# --- gdb stub ----------------------------------------------------------------------------------------------


def gdb_stub(accels: list[str], packets: int) -> list[dict]:
    from tests.robustness.test_gdb_robustness import Stub, _hostile

    out = []
    for accel in accels:
        if accel == "kvm" and not kvm_can_run("real"):
            continue
        session = Stub(accel, "real")
        entry: dict = {"accel": accel, "packets": 0, "ok": False}
        started = time.monotonic()
        try:
            session.connect()
            rng = random.Random(7)
            for _ in range(packets):
                session.ask(_hostile(rng))
                entry["packets"] += 1
            alive = session.ask(b"?").startswith(b"T")
            status, stderr = session.finish()
            entry.update({"ok": alive and status == 130 and "Traceback" not in stderr, "status": status})
        except Exception as err:  # the stub stopped answering: that is the finding
            entry["error"] = repr(err)
            entry["stderr"] = session.stderr()[-1500:]
        finally:
            session.close()
        entry["seconds"] = round(time.monotonic() - started, 1)
        out.append(entry)
        log(f"  {accel}: {entry['packets']} packets in {entry['seconds']} s: {'ok' if entry['ok'] else 'FAILED'}")
    return out


# --- report ------------------------------------------------------------------------------------------------


def markdown(summary: dict) -> str:
    guests = summary["random_guests"]
    lines = ["# minikvm soak", "",
             f"Host: {summary['host']['machine']}, {summary['host']['cpus']} CPUs, Python {summary['host']['python']}; "
             f"accelerators: {', '.join(summary['accelerators'])}; {summary['seconds'] / 60:.1f} minutes.", "",
             "## Random guests", "",
             f"{guests['runs']} guests in {guests['seconds'] / 60:.1f} min, timeout {guests['timeout']} s each, "
             f"{guests['workers']} worker processes.", "",
             "| stop reason | " + " | ".join(guests["by_accel"]) + " | total |",
             "|---|" + "---:|" * (len(guests["by_accel"]) + 1)]
    for stop, total in guests["stops"].items():
        cells = [str(guests["by_accel"][a]["stops"].get(stop, 0)) for a in guests["by_accel"]]
        lines.append(f"| {stop} | " + " | ".join(cells) + f" | {total} |")
    lines.append("| **runs** | " + " | ".join(str(v["runs"]) for v in guests["by_accel"].values())
                 + f" | **{guests['runs']}** |")
    lines += ["", f"- crashes: **{len(guests['crashes'])}**",
              f"- max RSS of a worker: {guests['max_rss'] >> 20} MiB (peak {guests['peak_rss'] >> 20} MiB); by "
              "accelerator: " + ", ".join(f"{a} {v.get('max_rss', 0) >> 20} MiB"
                                          for a, v in guests["by_accel"].items()),
              f"- file descriptors per worker before/after: {guests['fds_before']} / {guests['fds_after']} "
              f"({guests['fd_changes']} workers changed; threads changed in {guests['thread_changes']})",
              f"- slowest run {guests['slowest_run']:.2f} s, slowest report {guests['slowest_report']:.2f} s"]
    def key(crash: dict) -> tuple[str, str, str]:
        return crash["accel"], crash["outcome"], re.sub(r"0x[0-9a-f]+", "0x…", crash["message"])[:90]

    crashes = Counter(key(c) for c in guests["crashes"])
    if crashes:
        lines += ["", "| crashes | accel | count | first seed (reproduce) |", "|---|---|---:|---|"]
        for (accel, outcome, message), count in crashes.most_common():
            first = next(c for c in guests["crashes"] if key(c) == (accel, outcome, message))
            lines.append(f"| {outcome}: {message} | {accel} | {count} | `{first['reproduce']}` |")
    lines += ["", "## Lifecycle", "", "| accelerator | cycles | mix | fds before/after | threads before/after | "
              "RSS before/after (MiB) | growth | peak RSS (MiB) | flat |", "|---|---:|---|---|---|---|---:|---:|---|"]
    for entry in summary["lifecycle"]:
        if "crashed" in entry:
            lines.append(f"| {entry['accel']} | {entry['cycles']} | {entry['mix'] or 'plain'} | | | | | | "
                         f"**died: {entry['crashed']}** |")
            continue
        b, a = entry["before"], entry["after"]
        lines.append(f"| {entry['accel']} | {entry['cycles']} | {','.join(entry['mix'])} | {b['fds']}/{a['fds']} | "
                     f"{b['threads']}/{a['threads']} | {b['rss'] / MIB:.1f}/{a['rss'] / MIB:.1f} | "
                     f"{entry['rss_growth']:+.1%} | {entry['peak_rss'] / MIB:.0f} | "
                     f"{'yes' if entry['flat'] else 'NO'} |")
    lines += ["", "## Output floods", "",
              "| accelerator | bytes | in order | seconds | peak RSS (MiB) | growth (KiB) | "
              "two-guest runs with unprefixed lines |", "|---|---:|---|---:|---:|---:|---|"]
    for entry in summary["floods"]:
        lines.append(f"| {entry['accel']} | {entry['bytes']} | {entry['complete_and_in_order']} | {entry['seconds']} | "
                     f"{entry['peak_rss'] / MIB:.0f} | {entry['rss_growth'] >> 10} | "
                     f"{entry['two_guest_runs_with_unprefixed_lines']}/{entry['two_guest_runs']} |")
    lines += ["", "## gdb stub", "", "| accelerator | packets | ok |", "|---|---:|---|"]
    for entry in summary["gdb"]:
        lines.append(f"| {entry['accel']} | {entry['packets']} | {entry['ok']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guests", type=int, default=30_000)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=0.2)
    parser.add_argument("--parallel", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 400 guests, 100 cycles, small floods")
    args = parser.parse_args(argv)
    if args.quick:
        args.guests, args.cycles = 400, 100
    accels = available_accels()
    started = time.monotonic()
    host = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}
    summary: dict = {"host": host, "accelerators": accels}
    log(f"random guests: {args.guests} on {', '.join(accels)}")
    summary["random_guests"] = random_guests(accels, args.guests, args.timeout, args.parallel)
    log("lifecycle")
    summary["lifecycle"] = []
    for accel in accels:
        for cycles, mix in ((args.cycles, None), (max(args.cycles // 5, 20), "interrupts")):
            entry = lifecycle(accel, cycles, mix)
            summary["lifecycle"].append(entry)
            log(f"  {accel} {mix or 'plain'}: " + (f"died: {entry['crashed']}" if "crashed" in entry else
                f"fds {entry['before']['fds']}->{entry['after']['fds']}, RSS {entry['rss_growth']:+.1%}, "
                f"flat: {entry['flat']}"))
    log("output floods")
    with tempfile.TemporaryDirectory() as build:
        sizes = {"kvm": 1, "emu": 1} if args.quick else {"kvm": 8, "emu": 2}
        summary["floods"] = floods(accels, sizes, 3 if args.quick else 20, Path(build))
    log("gdb stub")
    summary["gdb"] = gdb_stub(accels, 1000 if args.quick else 10_000)
    summary["seconds"] = round(time.monotonic() - started, 1)
    crashed = (len(summary["random_guests"]["crashes"]) + sum("crashed" in e for e in summary["lifecycle"])
               + sum(not e["ok"] for e in summary["gdb"]))
    summary["crashes"] = crashed
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "soak.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = markdown(summary)
    (RESULTS_DIR / "soak.md").write_text(table)
    print()
    print(table)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
