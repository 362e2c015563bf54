"""The 1K OS (guests/os1k) on real minikvm: scripted shell sessions through a pipe.

Every session runs the installed `minikvm run --mode paging` on the built
kernel with the session's keystrokes on stdin and ends with `0` (power off
through the EXIT hypercall). Expected output is computed here from what each
program computes (factorials, primes, GCDs, the calculator's C integer
rules...), never copied from a run.

The sessions run on every accelerator this host can run 32-bit paging with
interrupt handlers on (measured with minikvm.accel.choose, never assumed);
`test_kvm_accelerator` says which, and why KVM cannot where it cannot.
"""

from __future__ import annotations

import math
import os
import re
import select
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from minikvm.accel import AcceleratorError, choose
from minikvm.arch.x86.state import Mode
from minikvm.boot.bundled import guests_dir

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
SOURCES = REPO / "guests" / "os1k"
LINE_LIMIT = 1000
NPROC = 16  # os1k.h: process slots
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
PROMPT = "os1k> "


# --- which accelerators ---------------------------------------------------------


@cache
def kvm_limitation() -> str | None:
    """Why this host's KVM cannot run the 1K OS (32-bit paging plus interrupt handlers), or None."""
    try:
        choose("kvm", Mode.PAGING, interrupts=True)
    except AcceleratorError as err:
        return str(err)
    return None


ACCELERATORS = ["emu"] + (["kvm"] if kvm_limitation() is None else [])


@pytest.fixture(params=ACCELERATORS)
def accel(request: pytest.FixtureRequest) -> str:
    return request.param


def test_kvm_accelerator() -> None:
    """KVM runs the 1K OS sessions where it can; where it cannot, asking for it is a clear error."""
    reason = kvm_limitation()
    if reason is None:
        assert choose("kvm", Mode.PAGING, interrupts=True).name == "kvm"
        assert "kvm" in ACCELERATORS
        return
    with pytest.raises(AcceleratorError, match="this host's KVM cannot run"):
        choose("kvm", Mode.PAGING, interrupts=True)
    assert "32-bit" in reason and "paging" in reason, reason  # names what the host cannot do
    assert choose("auto", Mode.PAGING, interrupts=True).name == "emu"
    assert ACCELERATORS == ["emu"]
    warnings.warn(f"1K OS sessions ran on the software CPU only: {reason}", stacklevel=1)


# --- running sessions -------------------------------------------------------------


def minikvm_command() -> str:
    for candidate in (Path(sys.prefix) / "bin" / "minikvm", REPO / ".venv" / "bin" / "minikvm"):
        if candidate.is_file():
            return str(candidate)
    pytest.fail("the minikvm command is not installed: run 'make .venv/.installed'")


def kernel_image() -> Path:
    path = guests_dir() / "os1k.bin"
    if not path.exists():
        pytest.fail(f"{path} is missing: run 'make -C guests/os1k' (or 'make guests')")
    return path


@dataclass
class Session:
    args: list[str]
    keys: bytes
    status: int
    out: str
    err: str

    def explain(self) -> str:
        return (f"command: {' '.join(self.args)}\nstatus: {self.status}\nstdin: {self.keys!r}\n"
                f"--- guest output ---\n{self.out}\n--- minikvm stderr ---\n{self.err}")

    @property
    def lines(self) -> list[str]:
        return self.out.split("\n")

    def after(self, command: str) -> list[str]:
        """The lines the shell printed for `command`: from its echo to the next prompt."""
        blocks = self.out.split(PROMPT)[1:]
        for block in blocks:
            first, _, rest = block.partition("\n")
            if first == command:
                return rest.split("\n")[:-1] if rest.endswith("\n") or not rest else rest.split("\n")
        raise AssertionError(f"no prompt with command {command!r}\n{self.explain()}")


def run_session(accel: str, keys: list[str] | bytes, timeout: float = 60) -> Session:
    """Boot the 1K OS with `keys` (lines, or raw bytes) on stdin; the session must end with `0`."""
    data = keys if isinstance(keys, bytes) else "".join(f"{line}\n" for line in keys).encode()
    args = [minikvm_command(), "run", "--mode", "paging", str(kernel_image()), "--accel", accel,
            "--timeout", str(timeout)]
    proc = subprocess.run(args, input=data, capture_output=True, timeout=timeout + 60)
    return Session(args, data, proc.returncode, proc.stdout.decode(errors="replace"),
                   proc.stderr.decode(errors="replace"))


def clean_exit(session: Session) -> None:
    assert session.status == 0, session.explain()
    assert "exit hypercall" in session.err, session.explain()
    assert re.search(r"^\[os\] power off after \d+ ticks$", session.out, re.MULTILINE), session.explain()


# --- what the programs compute, in Python ---------------------------------------------


def table() -> list[str]:
    lines = ["  x |" + "".join(f"{j:4d}" for j in range(1, 10)), "----+" + "-" * 36]
    return lines + [f"{i:3d} |" + "".join(f"{i * j:4d}" for j in range(1, 10)) for i in range(1, 10)]


def fibonacci() -> list[str]:
    numbers = [0, 1]
    while numbers[-1] + numbers[-2] < 1_000_000:
        numbers.append(numbers[-1] + numbers[-2])
    return ["Fibonacci numbers below 1000000: " + ", ".join(map(str, numbers))]


def primes() -> list[str]:
    sieve = [True] * 101
    for n in range(2, 11):
        for m in range(n * n, 101, n):
            sieve[m] = False
    found = [n for n in range(2, 101) if sieve[n]]
    return ["primes up to 100: " + " ".join(map(str, found)), f"{len(found)} primes"]


def factorials() -> list[str]:
    return [f"{n:2d}! = {math.factorial(n)}" for n in range(13)]


CALC_FORM = re.compile(r"^ *(-?\d+) *([-+*/]) *(-?\d+) *$")


def calculation(line: str) -> str:
    """The calculator's answer, with C's 32-bit int rules (division truncates toward zero)."""
    match = CALC_FORM.match(line)
    if not match or not all(INT_MIN <= int(match[i]) <= INT_MAX for i in (1, 3)):
        return "error: expected <number> <+ - * /> <number>"
    a, op, b = int(match[1]), match[2], int(match[3])
    if op == "/" and b == 0:
        return "error: division by zero"
    if op == "/":
        result = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
    else:
        result = {"+": a + b, "-": a - b, "*": a * b}[op]
    if not INT_MIN <= result <= INT_MAX:
        return "error: the result does not fit in 32 bits"
    return f"{a} {op} {b} = {result}"


CALC_INPUTS = ["12 + 30", "7 - 10", "-6 * 7", "100 / 7", "-7 / 2", "7/-2", "2--3", "7 / 0", "0 / 0",
               "2147483647 + 1", "-2147483648 - 1", "65536 * 65536", "-2147483648 / -1",
               "-2147483648 / 1", "99999999999 + 1", "3 x 4", "abc", "1 +", "+ 1", "4 + 5 6", ""]


def calculator(inputs: list[str]) -> list[str]:
    lines = ["calculator: a + b, a - b, a * b or a / b (integers); q quits"]
    for line in inputs:
        lines += [f"calc> {line}", calculation(line)]
    return [*lines, "calc> q"]


GCD_INPUTS = [(1071, 462), (48, 18), (17, 5), (0, 9), (9, 0), (0, 0), (2147483647, 2147483646), (832040, 514229)]
GCD_BAD = ["-4 6", "12", "x y", "1 2 3"]


def euclid(a: int, b: int) -> list[str]:
    lines, x, y = [], a, b
    while y:
        lines.append(f"  {x} = {x // y} * {y} + {x % y}")
        x, y = y, x % y
    assert x == math.gcd(a, b)
    return [*lines, f"gcd({a}, {b}) = {math.gcd(a, b)}"]


def gcd(pairs: list[tuple[int, int]], bad: list[str]) -> list[str]:
    lines = ["gcd: two numbers >= 0 per line, Euclid's algorithm shows its steps; q quits"]
    for a, b in pairs:
        lines += [f"gcd> {a} {b}", *euclid(a, b)]
    for line in bad:
        lines += [f"gcd> {line}", "error: expected two numbers >= 0"]
    return [*lines, "gcd> q"]


ECHO_INPUTS = ["hello world", "  spaced  out  ", "1K OS", "quit it", "QUIT"]


def echo(inputs: list[str]) -> list[str]:
    lines = ["echo: type lines, 'quit' ends"]
    for line in inputs:
        lines += [f"echo> {line}", line]
    return [*lines, "echo> quit"]


# Menu entry -> (keys typed after the number, expected lines; None: checked by its own test).
PROGRAMS: dict[str, tuple[list[str], list[str] | None]] = {
    "1": ([], table()),
    "2": ([], ["counting: " + " ".join(str(i) for i in range(10))]),
    "3": ([*ECHO_INPUTS, "quit"], echo(ECHO_INPUTS)),
    "4": ([], fibonacci()),
    "5": ([], primes()),
    "6": ([*CALC_INPUTS, "q"], calculator(CALC_INPUTS)),
    "7": ([], factorials()),
    "8": ([*(f"{a} {b}" for a, b in GCD_INPUTS), *GCD_BAD, "q"], gcd(GCD_INPUTS, GCD_BAD)),
    "9": ([], None),
}
MENU_NAMES = ["multiplication table", "counter", "echo", "fibonacci", "primes", "calculator",
              "factorials", "gcd", "about"]


def check_about(lines: list[str], session: Session) -> None:
    text = "\n".join(lines)
    assert "1K OS" in text, session.explain()
    match = re.search(r"You are pid (\d+), running in ring (\d), (\d+) ticks after boot; (\d+) programs", text)
    assert match, session.explain()
    assert match[2] == "3", "about must find itself in ring 3 (CS & 3)\n" + session.explain()
    assert int(match[1]) > 1, session.explain()


# --- tests --------------------------------------------------------------------------


def test_boot_menu_and_power_off(accel: str) -> None:
    s = run_session(accel, ["0"])
    clean_exit(s)
    assert "[os] 1K OS booting: kernel at 0x80001000" in s.out, s.explain()
    assert "[os] GDT with TSS, IDT with 256 gates, own page directory" in s.out, s.explain()
    assert "[os] PIC at vectors 0x20-0x2f, PIT at 100 Hz, COM1 IRQ 4" in s.out, s.explain()
    menu = [line for line in s.lines if re.match(r"^  \d  ", line)]
    assert menu == [f"  {i}  {name}" for i, name in enumerate(MENU_NAMES, 1)] + ["  0  power off"], s.explain()
    more = next(line for line in s.lines if line.startswith("more:")).split()[1:]
    assert more[:4] == ["ps", "spin", "crash", "uptime"], s.explain()
    assert s.out.rstrip("\n").split("\n")[-2] == PROMPT + "0", s.explain()


@pytest.mark.parametrize("number", sorted(PROGRAMS))
def test_menu_program(accel: str, number: str) -> None:
    keys, expected = PROGRAMS[number]
    s = run_session(accel, [number, *keys, "0"])
    clean_exit(s)
    lines = s.after(number)
    if expected is None:
        check_about(lines, s)
    else:
        assert lines == expected, s.explain()


def test_programs_by_name(accel: str) -> None:
    s = run_session(accel, ["factorials", "primes", "nosuch", "help", "0"])
    clean_exit(s)
    assert s.after("factorials") == factorials(), s.explain()
    assert s.after("primes") == primes(), s.explain()
    assert s.after("nosuch") == ["unknown command 'nosuch' (type help)"], s.explain()
    assert "  8  gcd" in s.after("help"), s.explain()


def test_ps_and_uptime(accel: str) -> None:
    s = run_session(accel, ["ps", "uptime", "0"])
    clean_exit(s)
    ps = s.after("ps")
    assert ps[0] == "  PID STATE     TICKS NAME", s.explain()
    rows = [re.match(r"^ *(\d+) (\w+) +(\d+) (.+)$", line) for line in ps[1:]]
    assert all(rows), s.explain()
    table = {m[4]: (int(m[1]), m[2]) for m in rows if m}
    # Waiting for ps, or preempted between spawn and wait: both are right.
    assert table["shell"][0] == 1 and table["shell"][1] in ("waiting", "ready"), s.explain()
    assert table["ps"][1] == "running", s.explain()
    up = re.match(r"^up (\d+)\.(\d\d) seconds \((\d+) ticks\)$", s.after("uptime")[0])
    assert up and int(up[3]) == int(up[1]) * 100 + int(up[2]), s.explain()


def spinner_lines(lines: list[str]) -> list[tuple[int, int, int]]:
    """(index, pid, round) of each spinner line."""
    found = []
    for index, line in enumerate(lines):
        match = re.search(r"spinner (\d+): round (\d+)$", line)
        if match:
            found.append((index, int(match[1]), int(match[2])))
    return found


def check_interleaved(s: Session) -> tuple[int, int]:
    """Two spinners, the same rounds each, in order, and interleaved (preemption, not one after the other)."""
    spins = spinner_lines(s.lines)
    pids = sorted({pid for _, pid, _ in spins})
    assert len(pids) == 2, s.explain()
    rounds = len(spins) // 2
    assert rounds > 1, s.explain()
    for pid in pids:
        assert [r for _, p, r in spins if p == pid] == list(range(1, rounds + 1)), s.explain()
    first = {pid: min(i for i, p, _ in spins if p == pid) for pid in pids}
    last = {pid: max(i for i, p, _ in spins if p == pid) for pid in pids}
    a, b = pids
    assert first[b] < last[a] and first[a] < last[b], "the spinners ran one after the other\n" + s.explain()
    return first[a], max(last.values())


class LiveSession:
    """minikvm with its stdin and stdout on pipes, typed into while the guest runs."""

    def __init__(self, accel: str, timeout: float = 60) -> None:
        self.args = [minikvm_command(), "run", "--mode", "paging", str(kernel_image()), "--accel", accel,
                     "--timeout", str(timeout)]
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.keys = b""
        self.out = b""

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.keys += line.encode() + b"\n"
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, self.out.decode(errors="replace"), re.MULTILINE)):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"never saw {pattern!r}\n" + self.finish(kill=True).explain())
            if select.select([self.proc.stdout], [], [], min(left, 0.1))[0]:
                self.out += os.read(self.proc.stdout.fileno(), 65536)
        return match

    def finish(self, kill: bool = False) -> Session:
        if kill:
            self.proc.kill()
        out, err = self.proc.communicate(timeout=60)
        self.out += out
        return Session(self.args, self.keys, self.proc.returncode, self.out.decode(errors="replace"),
                       err.decode(errors="replace"))


def test_spin_is_preempted_and_the_shell_still_answers(accel: str) -> None:
    """Typed while two busy processes run: the keys get through (IRQ 4) and the shell answers."""
    live = LiveSession(accel)
    try:
        live.wait_for(PROMPT)
        live.type("spin &")
        live.wait_for(r"^spinner \d+: round 1$")
        live.type("uptime")
        live.wait_for(r"^up \d+\.\d\d seconds")
        live.type("ps")
        live.wait_for(r"^ +\d+ running +\d+ ps$")
        live.type("wait")
        live.wait_for(r"^spin: both spinners finished$")
        live.type("0")
    finally:
        s = live.finish(kill=live.proc.poll() is None and "0\n" not in live.keys.decode())
    clean_exit(s)
    _, spin_end = check_interleaved(s)
    answered = next(i for i, line in enumerate(s.lines) if re.search(r"up \d+\.\d\d seconds", line))
    assert answered < spin_end, "the shell did not answer while the spinners ran\n" + s.explain()
    # Background lines may land between the prompt and the command: find the table by its header.
    header = s.lines.index("  PID STATE     TICKS NAME")
    table = s.lines[header + 1:header + 1 + NPROC]
    assert len([row for row in table if re.match(r"^ +\d+ (?:ready|running) +\d+ spinner$", row)]) == 2, s.explain()


def test_all_input_at_once_with_a_background_job(accel: str) -> None:
    s = run_session(accel, ["spin &", "uptime", "wait", "0"])
    clean_exit(s)
    check_interleaved(s)
    assert re.search(r"^\[\d+\] spin running in the background$", s.out, re.MULTILINE), s.explain()
    assert s.lines.index("spin: both spinners finished") < s.lines.index(PROMPT + "0"), s.explain()


def test_spin_in_the_foreground(accel: str) -> None:
    s = run_session(accel, ["spin", "0"])
    clean_exit(s)
    check_interleaved(s)
    assert s.after("spin")[-1] == "spin: both spinners finished", s.explain()


def test_many_processes_at_once(accel: str) -> None:
    s = run_session(accel, ["swarm", "0"])
    clean_exit(s)
    lines = s.after("swarm")
    assert lines[0] == "swarm: started 10 workers", s.explain()
    running = [line for line in lines if re.match(r"^ *\d+ \w+ +\d+ (worker|swarm|shell)$", line)]
    assert len(running) >= 12, "shell, swarm and 10 workers must exist at once\n" + s.explain()
    workers = [re.match(r"^worker (\d+): slept (\d+) ticks$", line) for line in lines if line.startswith("worker")]
    assert len(workers) == 10 and all(workers), s.explain()
    for match in workers:
        assert match and int(match[2]) == int(match[1]) % 5 * 10 + 10, s.explain()
    assert lines[-1] == "swarm: all workers finished", s.explain()


def user_function_range(name: str) -> range:
    """Where the user program `name` lies in the user image (nm -S on its ELF)."""
    elf = guests_dir() / "os1k" / "user.elf"
    out = subprocess.run(["nm", "-S", str(elf)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] == name:
            start = int(parts[0], 16)
            return range(start, start + int(parts[1], 16))
    raise AssertionError(f"{name} not in {elf}")


FAULTS = {
    # program: what its kill report must say (the address read from its own announcement where it names one)
    "crash": r"page fault writing 0x00000000",
    "kread": r"page fault reading (?P<addr>0x80001000)",
    "peek": r"page fault reading (?P<addr>0x[0-9a-f]{8})",
    "div0": r"divide error",
    "priv": r"general protection fault \(error code 0x0\)",
}


def check_killed(s: Session, program: str) -> None:
    lines = s.after(program)
    report = re.compile(rf"^\[os\] pid \d+ \({program}\) killed: {FAULTS[program]} at eip (?P<eip>0x[0-9a-f]{{8}})$")
    match = next((m for m in map(report.match, lines) if m), None)
    assert match, s.explain()
    assert int(match["eip"], 16) in user_function_range(program), "the report must name the faulting EIP\n" + \
        s.explain()
    if "addr" in match.groupdict():
        assert f" {match['addr']}" in lines[0], "the fault address is the one the program announced\n" + s.explain()
    assert not any("?!" in line for line in lines), "the program went on after its fault\n" + s.explain()


@pytest.mark.parametrize("program", sorted(FAULTS))
def test_faulting_process_is_killed_and_the_os_goes_on(accel: str, program: str) -> None:
    s = run_session(accel, [program, "7", "0"])
    clean_exit(s)
    check_killed(s, program)
    assert s.after("7") == factorials(), "the shell came back and runs programs\n" + s.explain()


def test_kernel_memory_is_not_readable_from_ring_3(accel: str) -> None:
    s = run_session(accel, ["kread", "0"])
    clean_exit(s)
    check_killed(s, "kread")


def test_another_process_memory_is_not_mapped(accel: str) -> None:
    """peek reads the shell's stack: mapped in the shell's page directory only."""
    s = run_session(accel, ["peek", "ps", "0"])
    clean_exit(s)
    check_killed(s, "peek")
    assert "reading the shell's stack at 0x" in s.after("peek")[0], s.explain()
    assert re.search(r"^ +1 (?:waiting|ready) +\d+ shell$", "\n".join(s.after("ps")), re.MULTILINE), s.explain()


def test_every_fault_in_one_session(accel: str) -> None:
    s = run_session(accel, [*FAULTS, "uptime", "0"])
    clean_exit(s)
    for program in FAULTS:
        check_killed(s, program)
    pids = [int(m[1]) for m in re.finditer(r"^\[os\] pid (\d+) ", s.out, re.MULTILINE)]
    assert pids == sorted(pids) and len(set(pids)) == len(FAULTS), s.explain()


def test_kernel_fault_panics_and_halts(accel: str) -> None:
    s = run_session(accel, ["panic", "0"])
    assert s.status == 0, s.explain()
    assert "halted" in s.err and "triple fault" not in s.err, s.explain()
    panic = re.search(r"^\[os\] KERNEL PANIC: page fault \(vector 14\), error code 0x2, eip 0x(8000[0-9a-f]{4})$",
                      s.out, re.MULTILINE)
    assert panic, s.explain()
    assert re.search(r"^\[os\] page fault writing 0x00000000 in pid \d+ \(panic\), cr2 0x00000000$", s.out,
                     re.MULTILINE), s.explain()
    assert re.search(r"^\[os\] eax [0-9a-f]{8} ebx [0-9a-f]{8} ecx [0-9a-f]{8} edx [0-9a-f]{8}$", s.out,
                     re.MULTILINE), s.explain()
    assert re.search(r"^\[os\] cs 0008 ", s.out, re.MULTILINE), s.explain()
    assert s.out.rstrip("\n").endswith("[os] system halted"), s.explain()
    assert "[os] power off" not in s.out, "the typed 0 must not run after a panic\n" + s.explain()


def test_line_editing(accel: str) -> None:
    long_line = "".join(chr(ord("a") + i % 26) for i in range(70))
    keys = (b"3\n"
            b"abx\x7fc\n"              # DEL erases
            b"xy\x08\x08z\n"           # BS erases, twice
            b"\x7f\x7fq\n"             # erasing on an empty line does nothing
            b"one\r\ntwo\rthree\n"     # CR LF is one line end; CR alone ends a line too
            + long_line.encode() + b"\n"
            b"quit\n0\n")
    s = run_session(accel, keys)
    clean_exit(s)
    lines = s.after("3")
    assert lines[1] == "echo> abx\b \bc" and lines[2] == "abc", s.explain()
    assert lines[3] == "echo> xy\b \b\b \bz" and lines[4] == "z", s.explain()
    assert lines[5] == "echo> q" and lines[6] == "q", s.explain()
    assert lines[7:13] == ["echo> one", "one", "echo> two", "two", "echo> three", "three"], s.explain()
    kept = long_line[:63]
    assert lines[13:16] == [f"echo> {kept}", "[line too long: kept 63 characters, dropped 7]", kept], s.explain()
    assert lines[16:] == ["echo> quit"], s.explain()


def test_full_session_through_every_program(accel: str) -> None:
    keys: list[str] = []
    for number in sorted(PROGRAMS):
        keys += [number, *PROGRAMS[number][0]]
    keys += ["ps", "spin", "crash", "uptime", "0"]
    s = run_session(accel, keys, timeout=100)
    clean_exit(s)
    for number in sorted(PROGRAMS):
        expected = PROGRAMS[number][1]
        if expected is None:
            check_about(s.after(number), s)
        else:
            assert s.after(number) == expected, f"program {number}\n" + s.explain()
    assert s.after("ps")[0] == "  PID STATE     TICKS NAME", s.explain()
    check_interleaved(s)
    check_killed(s, "crash")
    assert re.match(r"^up \d+\.\d\d seconds \(\d+ ticks\)$", s.after("uptime")[0]), s.explain()


# --- the size limit ------------------------------------------------------------------------


def code_lines(text: str) -> list[str]:
    """Lines that hold code: not blank, not only // or /* */ comments (string literals respected)."""
    kept, current, i, in_block = [], [], 0, False
    while i < len(text):
        c = text[i]
        if in_block:
            if text.startswith("*/", i):
                in_block, i = False, i + 2
                continue
            if c == "\n":
                kept.append("".join(current))
                current = []
            i += 1
        elif text.startswith("/*", i):
            in_block, i = True, i + 2
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
        elif c in "\"'":
            end = i + 1
            while end < len(text) and text[end] not in (c, "\n"):
                end += 2 if text[end] == "\\" else 1
            current.append(text[i:end + 1])
            i = end + 1
        elif c == "\n":
            kept.append("".join(current))
            current, i = [], i + 1
        else:
            current.append(c)
            i += 1
    kept.append("".join(current))
    return [line for line in kept if line.strip()]


def test_line_counter_understands_comments() -> None:
    source = ('int a; // one\n\n/* two\n   lines */\nchar *s = "// not a comment /* nor this */";\n'
              "  /* x */ int b; /* y */\n   // only a comment\nchar c = '\"';\n/**/\n")
    assert [line.strip() for line in code_lines(source)] == [
        "int a;", 'char *s = "// not a comment /* nor this */";', "int b;", "char c = '\"';"]


def test_the_whole_os_is_at_most_1000_lines() -> None:
    files = sorted(p for p in SOURCES.iterdir() if p.suffix in (".c", ".h", ".S"))
    assert {p.suffix for p in files} >= {".c", ".h", ".S"}, files
    counts = {p.name: len(code_lines(p.read_text())) for p in files}
    total = sum(counts.values())
    assert total <= LINE_LIMIT, f"{total} lines of code: {counts}"
