"""Software CPU speed: a compute-bound 32-bit guest under minikvm's `--accel emu` vs bare Unicorn and QEMU TCG.

The guest is a loop of ITERATIONS rounds of xorshift32 plus a read-modify-write
of a 4 KiB table, in 32-bit protected mode with paging off. Its instruction
count is exact: PROLOGUE instructions, then BODY per round, up to the label
`loop_end` (checked at start-up by counting instructions with a Unicorn code
hook on short runs). What follows `loop_end` only reports and exits: 4
instructions, left out of the count.

The same source is built twice:
  flat       bench/build/emu_guest.bin, what `minikvm run --mode protected`
             loads (at 0x1000, entered there); it ends with the EXIT hypercall
             (OUT 0x500), the final xorshift state in ESI.
  multiboot  bench/build/emu_guest_qemu.elf, a Multiboot kernel for
             `qemu-system-i386 -kernel` (linked at 1 MiB); it ends by writing
             the low 7 bits of the state to QEMU's isa-debug-exit port 0xF4,
             so the exit status ((value << 1) | 1) proves the loop ran.
The loop's bytes are the same in both; only the header and the exit differ.

Configurations, interleaved, REPEATS runs each, medians compared:
  unicorn bare       the flat binary in a fresh `Uc(UC_ARCH_X86, UC_MODE_32)`,
                     4 MiB mapped, no hooks, `emu_start(0x1000, loop_end)`;
                     only emu_start is timed (the baseline)
  unicorn, 50 ms timeout slices
                     the same engine in 50 ms slices ended by Unicorn's own
                     `timeout=`: emu_start again and again until loop_end.
                     Unicorn implements a timeout with a watchdog thread per
                     emu_start that polls in usleep(2) steps; this row shows
                     what that would cost. minikvm ends a slice only when
                     something asks (a timer deadline, an IRQ, a stop), from
                     one sleeping thread (minikvm/emu/slicer.py)
  minikvm            `Machine` with `Emu()` in this process, as `minikvm run
                     --mode protected --accel emu` builds it; only
                     `run_machines` is timed
  minikvm --interrupts
                     the same with the PIC and PIT models attached; the guest
                     never programs the PIT, so this is the machinery alone
  ... PIT at 100 Hz  the guest first programs PIT channel 0 for 100 Hz (IF
                     stays 0, nothing is delivered): the software CPU then
                     ends its Unicorn slice at every timer deadline
  QEMU TCG           `qemu-system-i386 -accel tcg` on the Multiboot build;
                     the whole process is timed and the median of the same
                     guest with ITERATIONS=1 (QEMU's start-up, SeaBIOS, the
                     multiboot load and exit) is subtracted. QEMU runs this
                     loop much faster than Unicorn, so its ITERATIONS is
                     calibrated separately to give a comparable run time
                     (the rate, instructions per second, is what is compared)

Every run's final xorshift state is checked against the value computed here
(xorshift32 is linear over GF(2), so N rounds are a 32x32 bit-matrix power).

Target (the issue): minikvm >= 50% of bare Unicorn's instructions per second.
The ratio to QEMU TCG is reported, with no target. Without qemu-system-i386
the script says so (in its output and the JSON) and measures the rest.

usage: python bench/emu.py [--seconds S] [--qemu-seconds S] [--repeats R] [--qemu PATH] [--wait-idle S]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BUILD_DIR,
    REPO,
    GuestSpec,
    Machine,
    MachineConfig,
    Mode,
    _run_tool,
    bar_chart,
    busy_cpus,
    default_memory,
    host_facts,
    load_average,
    median,
    print_table,
    run_machines,
    spread,
    verdict,
    write_json,
)

if TYPE_CHECKING:  # Unicorn is imported only when a run needs it
    from unicorn import Uc

GUEST = r"""
    .code32
    .text
    .globl _start
.if QEMU
    .balign 4
multiboot_header:                   # Multiboot 1: magic, flags 0 (QEMU loads the ELF), checksum
    .long   0x1BADB002, 0, -0x1BADB002
.endif
_start:
.if PIT
    mov     $0x34, %al              # PIT channel 0, lobyte/hibyte, mode 2 (rate generator)
    out     %al, $0x43
    mov     $(PIT_DIVISOR & 0xFF), %al
    out     %al, $0x40
    mov     $(PIT_DIVISOR >> 8), %al
    out     %al, $0x40
.endif
    mov     $ITERATIONS, %ecx       # PROLOGUE: 3 instructions
    mov     $SEED, %eax
    mov     $TABLE, %edi
round:                              # BODY: 14 instructions
    mov     %eax, %edx              # xorshift32 (13, 17, 5)
    shl     $13, %edx
    xor     %edx, %eax
    mov     %eax, %edx
    shr     $17, %edx
    xor     %edx, %eax
    mov     %eax, %edx
    shl     $5, %edx
    xor     %edx, %eax
    mov     %ecx, %ebx              # table[ecx % 1024] += state
    and     $1023, %ebx
    add     %eax, (%edi,%ebx,4)
    dec     %ecx
    jnz     round
loop_end:
    mov     %eax, %esi              # the final state, for the VMM to check
.if QEMU
    and     $0x7F, %eax             # isa-debug-exit: QEMU exits with (AL << 1) | 1
    out     %al, $0xF4
.else
    xor     %eax, %eax              # EXIT hypercall: AL=0
    mov     $0x500, %dx
    out     %al, %dx
.endif
halt:
    hlt                             # not reached
    jmp     halt
"""

PROLOGUE, BODY = 3, 14  # instructions before the loop and per round
PIT_PROLOGUE = 6  # the PIT variant's extra instructions
SEED = 0x2545F491
TABLE = 0x20000  # the 4 KiB the loop writes: free RAM under both minikvm (4 MiB) and QEMU
FLAT_LOAD = 0x1000  # minikvm's protected-mode load address and entry
MULTIBOOT_LOAD = 0x100000
RAM = default_memory(Mode.PROTECTED)
PIT_HZ = 100
PIT_DIVISOR = round(1_193_182 / PIT_HZ)
TARGET = 0.5

SLICE_US = 50_000  # the slice length Unicorn's own `timeout` is measured with

BARE, SLICED, MINIKVM, INTERRUPTS, PIT, QEMU, QEMU_STARTUP = (
    "unicorn bare", f"unicorn, {SLICE_US // 1000} ms timeout slices", "minikvm", "minikvm --interrupts",
    f"minikvm --interrupts, PIT {PIT_HZ} Hz", "QEMU TCG", "QEMU start-up")
QEMU_DEVICE = "isa-debug-exit,iobase=0xf4,iosize=0x04"


# --- the guest -------------------------------------------------------------------


@dataclass(frozen=True)
class FlatGuest:
    image: bytes
    iterations: int
    loop_end: int  # address of the first instruction after the loop
    prologue: int  # instructions before the loop

    @property
    def instructions(self) -> int:
        return self.prologue + BODY * self.iterations


def _symbol(elf: Path, name: str) -> int:
    done = subprocess.run(["nm", str(elf)], capture_output=True, text=True, check=True)
    for line in done.stdout.splitlines():
        value, _, symbol = line.split()
        if symbol == name:
            return int(value, 16)
    raise RuntimeError(f"{name} not found in {elf}")


def _assemble(name: str, iterations: int, qemu: bool = False, pit: bool = False) -> Path:
    """Assemble and link one build of GUEST; returns the ELF."""
    if iterations < 1:
        raise ValueError("ITERATIONS must be at least 1 (0 would run 2**32 rounds)")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    src, obj, elf = BUILD_DIR / f"{name}.S", BUILD_DIR / f"{name}.o", BUILD_DIR / f"{name}.elf"
    src.write_text(GUEST)
    symbols = {"ITERATIONS": iterations, "SEED": SEED, "TABLE": TABLE, "QEMU": int(qemu), "PIT": int(pit),
               "PIT_DIVISOR": PIT_DIVISOR}
    defsyms = [arg for key, value in symbols.items() for arg in ("--defsym", f"{key}={value}")]
    _run_tool(["as", "--32", "--fatal-warnings", "--noexecstack", *defsyms, "-o", str(obj), str(src)])
    load = MULTIBOOT_LOAD if qemu else FLAT_LOAD
    _run_tool(["ld", "-m", "elf_i386", f"-Ttext={load:#x}", "--fatal-warnings", "-e", "_start", "-o", str(elf),
               str(obj)])
    return elf


def build_flat(iterations: int, pit: bool = False) -> FlatGuest:
    name = "emu_guest_pit" if pit else "emu_guest"
    elf = _assemble(name, iterations, pit=pit)
    binary = BUILD_DIR / f"{name}.bin"
    _run_tool(["objcopy", "-O", "binary", "-j", ".text", str(elf), str(binary)])
    return FlatGuest(binary.read_bytes(), iterations, _symbol(elf, "loop_end"),
                     PROLOGUE + (PIT_PROLOGUE if pit else 0))


def build_multiboot(iterations: int) -> Path:
    return _assemble("emu_guest_qemu" if iterations > 1 else "emu_guest_qemu_startup", iterations, qemu=True)


def _xorshift32(x: int) -> int:
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    return x ^ ((x << 5) & 0xFFFFFFFF)


def expected_state(rounds: int) -> int:
    """The guest's final state after `rounds` rounds: the round's bit matrix to that power, applied to SEED."""
    step = [_xorshift32(1 << bit) for bit in range(32)]  # column images of one round

    def apply(matrix: list[int], x: int) -> int:
        out = 0
        for bit in range(32):
            if x >> bit & 1:
                out ^= matrix[bit]
        return out

    power = [1 << bit for bit in range(32)]  # identity
    while rounds:
        if rounds & 1:
            power = [apply(step, column) for column in power]
        step = [apply(step, column) for column in step]
        rounds >>= 1
    return apply(power, SEED)


# --- the runs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    seconds: float  # wall time of the run
    state: int  # the guest's final xorshift state (QEMU: its low 7 bits)
    cpu_seconds: float  # CPU time of every thread of the process that ran it, over the run
    switches: int  # context switches of that process (voluntary and not) over the run


class Stopwatch:
    """Wall time, CPU time and context switches between start and stop, for this process or its children."""

    def __init__(self, who: int = resource.RUSAGE_SELF) -> None:
        self.who = who
        self.usage = resource.getrusage(who)
        self.started = time.perf_counter()

    def stop(self, state: int) -> Sample:
        seconds = time.perf_counter() - self.started
        now, then = resource.getrusage(self.who), self.usage
        cpu = now.ru_utime + now.ru_stime - then.ru_utime - then.ru_stime
        switches = now.ru_nvcsw + now.ru_nivcsw - then.ru_nvcsw - then.ru_nivcsw
        return Sample(seconds, state, cpu, switches)


def _bare_engine(guest: FlatGuest) -> Uc:
    from unicorn import UC_ARCH_X86, UC_MODE_32, Uc

    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, RAM)
    uc.mem_write(FLAT_LOAD, guest.image)
    return uc


def run_bare(guest: FlatGuest) -> Sample:
    """The flat binary in bare Unicorn: no hooks, no devices, one emu_start until `loop_end`."""
    import unicorn.x86_const as x86

    uc = _bare_engine(guest)
    watch = Stopwatch()
    uc.emu_start(FLAT_LOAD, guest.loop_end)
    return watch.stop(uc.reg_read(x86.UC_X86_REG_EAX))


def run_bare_sliced(guest: FlatGuest) -> Sample:
    """Bare Unicorn run in slices, each ended by Unicorn's own timeout of SLICE_US.

    Unicorn implements `timeout` with a watchdog thread per emu_start that
    polls in usleep(2) steps; this row shows what that costs without minikvm.
    """
    import unicorn.x86_const as x86

    uc = _bare_engine(guest)
    uc.ctl_exits_enabled(True)  # as minikvm: stop at an exit address, not at emu_start's `until`
    uc.ctl_set_exits([guest.loop_end])
    watch = Stopwatch()
    pc = FLAT_LOAD
    while pc != guest.loop_end:
        uc.emu_start(pc, 0, timeout=SLICE_US)
        pc = uc.reg_read(x86.UC_X86_REG_EIP)
    return watch.stop(uc.reg_read(x86.UC_X86_REG_EAX))


def count_instructions(guest: FlatGuest) -> int:
    """Instructions from the entry to `loop_end`, counted one by one with a code hook (short guests only)."""
    from unicorn import UC_HOOK_CODE

    uc = _bare_engine(guest)
    count = 0

    def hook(*_: object) -> None:
        nonlocal count
        count += 1

    uc.hook_add(UC_HOOK_CODE, hook)
    uc.emu_start(FLAT_LOAD, guest.loop_end)
    return count


def run_minikvm(guest: FlatGuest, interrupts: bool) -> Sample:
    """The flat binary as `minikvm run --mode protected --accel emu [--interrupts]` runs it; the run alone is timed."""
    from minikvm.emu.cpu import Emu

    spec = GuestSpec(name="emu_guest", path=str(BUILD_DIR / "emu_guest.bin"), image=guest.image,
                     mode=Mode.PROTECTED, memory=RAM, interrupts=interrupts)
    output = bytearray()
    machine = Machine(MachineConfig(spec), Emu(), output.extend)
    try:
        watch = Stopwatch()
        (result,) = run_machines([machine])
        assert machine.vcpu is not None
        sample = watch.stop(machine.vcpu.get_regs().rsi)
        if not result.stop.clean:
            raise RuntimeError(f"the guest did not end cleanly under minikvm: {result.stop}")
    finally:
        machine.close()
    return sample


def run_qemu(qemu: str, elf: Path, timeout: float) -> Sample:
    """The whole `qemu-system-i386` process, from spawn to exit."""
    argv = [qemu, "-accel", "tcg", "-nographic", "-no-reboot", "-kernel", str(elf), "-device", QEMU_DEVICE]
    watch = Stopwatch(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=timeout)
    sample = watch.stop(done.returncode >> 1)
    if not done.returncode & 1:  # isa-debug-exit always makes it odd; anything else is QEMU's own failure
        raise RuntimeError(f"{' '.join(argv)} exited with status {done.returncode}: {done.stderr.decode().strip()}")
    return sample


def qemu_version(qemu: str) -> str | None:
    """The version line, or None when `qemu` cannot be run."""
    path = shutil.which(qemu)
    if path is None:
        return None
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.splitlines()[0] if done.returncode == 0 and done.stdout else None


def check(label: str, sample: Sample, rounds: int, bits: int = 32) -> None:
    want = expected_state(rounds) & ((1 << bits) - 1)
    if sample.state != want:
        raise RuntimeError(f"{label}: final state {sample.state:#x}, expected {want:#x} after {rounds} rounds")


# --- calibration -----------------------------------------------------------------------


def calibrate_minikvm(seconds: float) -> int:
    """Rounds for minikvm to run about `seconds`."""
    trial = 1_000_000
    guest = build_flat(trial)
    run_minikvm(guest, False)  # warm-up (imports Unicorn)
    took = min(run_minikvm(guest, False).seconds for _ in range(2))
    return max(trial, int(trial * seconds / took))


def calibrate_qemu(qemu: str, startup_elf: Path, seconds: float) -> int:
    """Rounds for QEMU's guest to compute about `seconds` beyond its start-up."""
    trial = 50_000_000
    elf = build_multiboot(trial)
    base = min(run_qemu(qemu, startup_elf, 60).seconds for _ in range(2))
    took = min(run_qemu(qemu, elf, 120).seconds for _ in range(2)) - base
    return max(trial, int(trial * seconds / max(took, 0.01)))


# --- main ----------------------------------------------------------------------------------


def wait_for_idle(limit: float, idle: float = 0.5) -> None:
    """Wait (at most `limit` seconds) until other work keeps fewer than `idle` CPUs busy.

    Unicorn's timeout watchdog and QEMU's threads need a second core; a
    shared host that has none to spare moves the ratios.
    """
    deadline = time.monotonic() + limit
    while (busy := busy_cpus()) >= idle:
        if time.monotonic() >= deadline:
            print(f"the host is still busy ({busy:.2f} CPUs) after waiting {limit:g} s; measuring anyway")
            return


def check_instruction_count() -> None:
    """The count is read off the loop's structure; check it against Unicorn counting one by one."""
    for pit in (False, True):
        for rounds in (1, 3, 100):
            small = build_flat(rounds, pit=pit)
            counted = count_instructions(small)
            if counted != small.instructions:
                raise RuntimeError(f"{'PIT ' if pit else ''}guest with {rounds} rounds ran {counted} instructions "
                                   f"to loop_end, expected {small.instructions}")
    print(f"instructions to loop_end: {PROLOGUE} + {BODY} x ITERATIONS (+{PIT_PROLOGUE} with the PIT set-up), "
          "checked with a Unicorn code hook")


@dataclass
class QemuSetup:
    version: str | None
    note: str | None = None  # why QEMU was not measured
    iterations: int = 0
    elf: Path | None = None
    startup_elf: Path | None = None


def set_up_qemu(qemu: str, seconds: float) -> QemuSetup:
    version = qemu_version(qemu)
    if version is None:
        return QemuSetup(None, f"{qemu} is not available (Debian: apt-get install -y qemu-system-x86); "
                               "QEMU TCG not measured")
    setup = QemuSetup(version, startup_elf=build_multiboot(1))
    try:
        setup.iterations = calibrate_qemu(qemu, setup.startup_elf, seconds)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        setup.note = f"QEMU TCG not measured: {err}"
        return setup
    setup.elf = build_multiboot(setup.iterations)
    return setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="minikvm's run time per run (1.5)")
    parser.add_argument("--qemu-seconds", type=float, default=1.5,
                        help="QEMU's run time per run beyond its start-up (1.5)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per configuration (5)")
    parser.add_argument("--qemu", default="qemu-system-i386", help="the QEMU binary (qemu-system-i386)")
    parser.add_argument("--wait-idle", type=float, default=30, metavar="SECONDS",
                        help="first wait up to this long for other work on the host to settle (30)")
    args = parser.parse_args()

    wait_for_idle(args.wait_idle)
    facts = host_facts()
    print(f"host: {facts.cpus} CPUs, load average {facts.loadavg_before[0]:.2f} (1 min), "
          f"{facts.busy_cpus_before:.2f} CPUs busy with other work just before the run")
    check_instruction_count()

    iterations = calibrate_minikvm(args.seconds)
    guest, pit_guest = build_flat(iterations), build_flat(iterations, pit=True)
    qemu = set_up_qemu(args.qemu, args.qemu_seconds)
    print(f"QEMU: {qemu.version}" if qemu.note is None else qemu.note)
    print(f"ITERATIONS: {iterations:,} for Unicorn and minikvm ({guest.instructions:,} instructions)"
          + (f", {qemu.iterations:,} for QEMU" if qemu.elf is not None else ""))

    runs: dict[str, Callable[[], Sample]] = {
        BARE: lambda: run_bare(guest),
        SLICED: lambda: run_bare_sliced(guest),
        MINIKVM: lambda: run_minikvm(guest, False),
        INTERRUPTS: lambda: run_minikvm(guest, True),
        PIT: lambda: run_minikvm(pit_guest, True),
    }
    rounds = dict.fromkeys(runs, iterations)
    instructions = {label: pit_guest.instructions if label == PIT else guest.instructions for label in runs}
    if qemu.elf is not None and qemu.startup_elf is not None:
        binary, elf, startup_elf = args.qemu, qemu.elf, qemu.startup_elf
        runs[QEMU] = lambda: run_qemu(binary, elf, 60 + 20 * args.qemu_seconds)
        runs[QEMU_STARTUP] = lambda: run_qemu(binary, startup_elf, 60)
        rounds[QEMU], rounds[QEMU_STARTUP] = qemu.iterations, 1
        instructions[QEMU] = PROLOGUE + BODY * qemu.iterations
    samples: dict[str, list[Sample]] = {label: [] for label in runs}
    run_bare(guest)  # warm-up: first-call costs of the engine
    # Interleaved, so drifting load elsewhere on the host hits every configuration alike.
    for _ in range(args.repeats):
        for label, run in runs.items():
            sample = run()
            check(label, sample, rounds[label], bits=7 if label.startswith("QEMU") else 32)
            samples[label].append(sample)
    loadavg_after, busy_after = load_average(), busy_cpus()
    startup = samples.pop(QEMU_STARTUP, [])

    # Seconds of emulation per run; QEMU's with its median start-up taken off.
    startup_median = median([s.seconds for s in startup]) if startup else 0.0
    seconds = {label: [s.seconds - (startup_median if label == QEMU else 0.0) for s in got]
               for label, got in samples.items()}
    ips = {label: [instructions[label] / s for s in secs] for label, secs in seconds.items()}
    mips = {label: median(values) / 1e6 for label, values in ips.items()}
    cpu_share = {label: median([s.cpu_seconds / s.seconds for s in got]) for label, got in samples.items()}
    switch_rate = {label: median([s.switches / s.seconds for s in got]) for label, got in samples.items()}
    bare, qemu_mips = mips[BARE], mips.get(QEMU)
    rows = []
    results: dict[str, object] = {}
    for label in samples:
        secs = seconds[label]
        rows.append([label, f"{rounds[label]:,}", f"{median(secs):.3f}", f"{min(secs):.3f}", f"{max(secs):.3f}",
                     f"{mips[label]:.1f}", f"{100 * mips[label] / bare:.0f}%",
                     "-" if qemu_mips is None else f"{mips[label] / qemu_mips:.3f}",
                     f"{cpu_share[label]:.2f}", f"{switch_rate[label]:,.0f}"])
        results[label] = {"iterations": rounds[label], "instructions": instructions[label],
                          "seconds": spread(secs), "instructions_per_second": spread(ips[label]),
                          "cpu_seconds_per_second": cpu_share[label], "context_switches_per_second": switch_rate[label],
                          "ratio_to_bare_unicorn": mips[label] / bare,
                          "ratio_to_qemu_tcg": None if qemu_mips is None else mips[label] / qemu_mips}
    print_table(f"Compute-bound 32-bit guest, instructions per second, median of {args.repeats} runs "
                f"(load average before {facts.loadavg_before[0]:.2f}, after {loadavg_after[0]:.2f})",
                ["configuration", "iterations", "median s", "min s", "max s", "MIPS", "÷ bare", "÷ QEMU",
                 "CPU/wall", "ctx sw/s"], rows)
    print(f"{BODY} instructions per iteration (xorshift32 and a table update); every run's final state checked. "
          "CPU/wall: CPU time of all the process's threads per second of run; ctx sw/s: its context switches")
    if startup:
        print(f"QEMU: the whole process timed, minus the median start-up of the same guest with ITERATIONS=1 "
              f"({startup_median * 1e3:.0f} ms: SeaBIOS, the Multiboot load, the exit); its CPU/wall includes "
              "the start-up")

    ratio = mips[MINIKVM] / bare
    print(f"\nminikvm ÷ bare Unicorn: {100 * ratio:.0f}%  target >= {100 * TARGET:.0f}%: {verdict(ratio >= TARGET)}")
    print(f"minikvm --interrupts ÷ minikvm: {100 * mips[INTERRUPTS] / mips[MINIKVM]:.0f}%; with the PIT at "
          f"{PIT_HZ} Hz: {100 * mips[PIT] / mips[MINIKVM]:.0f}%; bare Unicorn in {SLICE_US // 1000} ms timeout "
          f"slices ÷ bare: {100 * mips[SLICED] / bare:.0f}%")
    if qemu_mips is not None:
        print(f"minikvm ÷ QEMU TCG: {mips[MINIKVM] / qemu_mips:.3f} (QEMU runs this guest "
              f"{qemu_mips / mips[MINIKVM]:.1f}x faster); bare Unicorn ÷ QEMU TCG: {bare / qemu_mips:.3f}")
    else:
        print(qemu.note)
    print(f"load average before {' '.join(f'{x:.2f}' for x in facts.loadavg_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in loadavg_after)}; CPUs busy with other work before "
          f"{facts.busy_cpus_before:.2f}, after {busy_after:.2f}")

    qemu_json: dict[str, object] = {"measured": qemu_mips is not None, "binary": args.qemu,
                                    "version": qemu.version, "note": qemu.note}
    if startup:
        qemu_json["command"] = (f"{args.qemu} -accel tcg -nographic -no-reboot -kernel <guest.elf> "
                                f"-device {QEMU_DEVICE}")
        qemu_json["startup_seconds"] = spread([s.seconds for s in startup])
        qemu_json["whole_process_seconds"] = spread([s.seconds for s in samples[QEMU]])
    path = write_json("emu", {
        "host": facts, "loadavg_after": loadavg_after, "busy_cpus_after": busy_after, "repeats": args.repeats,
        "guest": {"mode": "32-bit protected, paging off", "instructions": f"{PROLOGUE} + {BODY} x iterations",
                  "pit_variant_extra_instructions": PIT_PROLOGUE, "seed": SEED, "table": TABLE,
                  "pit_hz": PIT_HZ},
        "slice_us": SLICE_US, "results": results, "qemu": qemu_json,
        "targets": {"minikvm_vs_bare_unicorn": {"value": ratio, "target": f">= {TARGET}", "met": ratio >= TARGET}},
        "ratios": {"minikvm_vs_bare_unicorn": ratio,
                   "interrupts_vs_minikvm": mips[INTERRUPTS] / mips[MINIKVM],
                   "pit_vs_minikvm": mips[PIT] / mips[MINIKVM],
                   "sliced_unicorn_vs_bare": mips[SLICED] / bare,
                   "minikvm_vs_qemu_tcg": None if qemu_mips is None else mips[MINIKVM] / qemu_mips,
                   "bare_unicorn_vs_qemu_tcg": None if qemu_mips is None else bare / qemu_mips},
    })
    labels = list(samples)
    unicorn_based = [k for k in labels if k != QEMU]  # QEMU's bar would flatten the others
    chart = bar_chart("emu", f"Compute-bound 32-bit guest, median of {args.repeats} runs", [
        ("million guest instructions per second (higher is better)", labels, [mips[k] for k in labels]),
        ("÷ bare Unicorn (Unicorn-based runs)", unicorn_based, [mips[k] / bare for k in unicorn_based]),
    ])
    print(f"\nwrote {path.relative_to(REPO)} and {chart.relative_to(REPO)}")


if __name__ == "__main__":
    main()
