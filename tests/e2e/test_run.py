"""The happy paths (and the guest-caused ends) through the installed `minikvm` and `kvm-vmm`.

Every run goes through real pipes: stdin is written and closed, stdout and
stderr are read separately. Expected guest output is computed from what the
guest computes (support.EXPECTED), never copied from a run.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from .support import (
    ECHO_UNTIL_Q,
    EXPECTED,
    PAGING_ENTRY,
    PAGING_HELLO,
    PAGING_HELLO_OUTPUT,
    POLL_FOREVER,
    READY_OUTPUT,
    SPIN,
    SPIN_AFTER_READY,
    bundled_image,
    command,
    describe,
    echo_output,
    expected_output,
    guest_sources,
    run,
    split_prefixed,
    stop_lines,
    symbol_address,
)

pytestmark = pytest.mark.timeout(60)

TinyGuest = Callable[[str, bytes], Path]
PM_LOAD = 0x1000  # ABI.md: protected and long-mode images are loaded at 0x1000
EOF_BOUND = 15.0  # seconds: a guest polling an exhausted input must be stopped well within this


def assert_ran(proc: subprocess.CompletedProcess[bytes], status: int = 0) -> dict[str, str]:
    """No traceback, the expected exit status; returns the stop lines (name → the rest)."""
    text = describe(proc)
    assert b"Traceback" not in proc.stdout + proc.stderr, text
    assert proc.returncode == status, text
    return stop_lines(proc.stderr)


def guest_of(name: str, guests: list[str]) -> str:
    """Which requested guest a reported name belongs to: the longest guest name it starts with."""
    owners = [g for g in set(guests) if name.startswith(g)]
    assert owners, f"the name {name!r} belongs to none of {guests}"
    return max(owners, key=len)


def assert_names_cover(names: list[str], guests: list[str]) -> dict[str, str]:
    """Every guest got its own name: reported name → guest, one name per guest given."""
    owners = {name: guest_of(name, guests) for name in names}
    assert len(set(names)) == len(names) == len(guests), (names, guests)
    assert Counter(owners.values()) == Counter(guests), owners
    return owners


# --- listing ---------------------------------------------------------------------


def test_guests_lists_every_bundled_guest() -> None:
    proc = run("minikvm", "guests")
    assert proc.returncode == 0 and proc.stderr == b"", describe(proc)
    listed = {}
    for line in proc.stdout.decode().splitlines():
        name, mode, *_ = line.split()
        listed[name] = mode
        assert "not built" not in line, line  # `make guests` built them all
    # The flat guests come from guests/Makefile's mode lists; the 1K OS has its own directory.
    assert listed == {**guest_sources(), "os1k": "paging"}
    assert set(listed) - {"os1k"} == set(EXPECTED), "support.EXPECTED needs the output of every flat guest"


# --- one guest -------------------------------------------------------------------


@pytest.mark.parametrize("program", ["minikvm", "kvm-vmm"])
def test_hello(kvm_required: None, program: str) -> None:
    args = ["run", "hello"] if program == "minikvm" else ["hello"]
    proc = run(program, *args)
    stops = assert_ran(proc)
    assert proc.stdout == expected_output("hello"), describe(proc)
    assert list(stops) == ["hello"], describe(proc)
    assert re.match(r"halted \(HLT\)", stops["hello"]), describe(proc)
    assert proc.stderr.decode().count("\n") == 1, describe(proc)  # nothing but the stop line


def test_default_guest_is_the_1k_os(kvm_required: None) -> None:
    proc = run("minikvm", "run", stdin=b"0\n", timeout=60)
    stops = assert_ran(proc)
    assert list(stops) == ["os1k"], describe(proc)
    assert b"1K OS menu" in proc.stdout and b"power off" in proc.stdout, describe(proc)


def test_kvm_vmm_runs_a_real_mode_file(kvm_required: None) -> None:
    proc = run("kvm-vmm", str(bundled_image("counter")))
    stops = assert_ran(proc)
    assert proc.stdout == expected_output("counter"), describe(proc)
    assert list(stops) == ["counter"], describe(proc)


def test_kvm_vmm_long_mode(kvm_required: None) -> None:
    proc = run("kvm-vmm", "--long-mode", str(bundled_image("hello_64")))
    stops = assert_ran(proc)
    assert proc.stdout == expected_output("hello_64"), describe(proc)
    assert "exit" in stops["hello_64"], describe(proc)


def test_kvm_vmm_paging(kvm_required: None, tiny_guest: TinyGuest) -> None:
    """ABI.md's --paging layout: entered at virtual 0x80001000; the stop names the HLT there.
    (On a host whose KVM cannot run 32-bit paging, auto picks the software CPU.)"""
    proc = run("kvm-vmm", "--paging", str(tiny_guest("paging", PAGING_HELLO)))
    stops = assert_ran(proc)
    assert proc.stdout == PAGING_HELLO_OUTPUT, describe(proc)
    hlt = PAGING_ENTRY + PAGING_HELLO.index(0xF4)
    assert re.match(rf"halted \(HLT\) at {hlt:#x}\b", stops["paging"]), describe(proc)


@pytest.mark.parametrize("guest", [g for g in EXPECTED if g != "hctest"])
def test_quiet_stdout_is_the_guest_output_byte_for_byte(kvm_required: None, guest: str) -> None:
    proc = run("minikvm", "run", "--quiet", guest)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == expected_output(guest), describe(proc)
    assert proc.stderr == b"", describe(proc)


def test_stats_counts_exits_by_reason_and_port(kvm_required: None) -> None:
    """hello: one PUTCHAR (OUT to 0x500) per byte, then one HLT."""
    proc = run("minikvm", "run", "--stats", "hello")
    stops = assert_ran(proc)
    assert proc.stdout == expected_output("hello"), describe(proc)
    chars = len(expected_output("hello"))
    err = proc.stderr.decode()
    assert re.search(rf"\bafter {chars + 1} exits\b", stops["hello"]), describe(proc)
    for pattern in (rf"^\s*\w*Io\w*\s+{chars}\s*$",          # by reason: port I/O
                    r"^\s*\w*Hlt\w*\s+1\s*$",                 # by reason: HLT
                    rf"^\s*0x0*500\s+out\s+{chars}\s*$"):     # by port: the hypercall port
        assert re.search(pattern, err, re.MULTILINE | re.IGNORECASE), f"{pattern!r}\n{describe(proc)}"


def test_verbose_prints_every_exit(kvm_required: None) -> None:
    proc = run("minikvm", "run", "--verbose", "hello")
    assert_ran(proc)
    assert proc.stdout == expected_output("hello"), describe(proc)
    lines = proc.stderr.decode().splitlines()
    outs = [line for line in lines if re.search(r"\bout\b.*\b0x0*500\b", line, re.IGNORECASE)]
    assert len(outs) == len(expected_output("hello")), describe(proc)
    assert any(re.search(r"\bhlt", line, re.IGNORECASE) for line in lines if "halted" not in line), describe(proc)


def test_hctest_stops_at_the_unknown_hypercall(kvm_required: None) -> None:
    proc = run("minikvm", "run", "hctest")
    stops = assert_ran(proc, status=1)
    assert proc.stdout == expected_output("hctest"), describe(proc)
    where = symbol_address(bundled_image("hctest", ".elf"), "bad_hypercall")
    assert re.search(r"hypercall\b.*\b0x7f\b", stops["hctest"]), describe(proc)
    assert re.search(rf"\b{where:#x}\b", stops["hctest"]), describe(proc)


def _out_before(guest: str, label: str) -> int:
    """The address of the one-byte OUT (EE) just before `label` in a bundled guest."""
    address = symbol_address(bundled_image(guest, ".elf"), label) - 1
    load = 0 if guest_sources()[guest] == "real" else PM_LOAD
    assert bundled_image(guest).read_bytes()[address - load] == 0xEE, f"{guest}: no OUT before {label}"
    return address


STOP_PLACES: dict[str, tuple[str, Callable[[], int]]] = {
    "hello": (r"halted \(HLT\)", lambda: symbol_address(bundled_image("hello", ".elf"), "done")),
    "multiplication": (r"exit", lambda: _out_before("multiplication", "halt")),
    "hello_64": (r"exit", lambda: _out_before("hello_64", "halt")),
    "hctest": (r"unknown hypercall 0x7f", lambda: symbol_address(bundled_image("hctest", ".elf"),
                                                                 "bad_hypercall")),
}


@pytest.mark.parametrize("accel", ["kvm", "emu"])
@pytest.mark.parametrize("guest", list(STOP_PLACES))
def test_stop_line_names_the_instruction_that_stopped(guest: str, accel: str,
                                                      request: pytest.FixtureRequest) -> None:
    """Both accelerators name the same guest address: the HLT, or the OUT of the hypercall."""
    if accel == "kvm":
        request.getfixturevalue("kvm_required")
    proc = run("minikvm", "run", "--accel", accel, guest)
    stops = assert_ran(proc, status=1 if guest == "hctest" else 0)
    assert proc.stdout == expected_output(guest), describe(proc)
    what, address = STOP_PLACES[guest]
    assert re.match(rf"{what}.* at {address():#x}\b", stops[guest]), describe(proc)


# --- several guests --------------------------------------------------------------

PARALLEL = {
    "2": ["multiplication", "matrix"],
    "4": ["fibonacci", "multiplication", "hello", "hello"],
    "8": ["hello", "counter", "multiplication", "multiplication_short", "fibonacci", "matrix", "matrix",
          "hello_64"],
}


@pytest.mark.parametrize("guests", list(PARALLEL.values()), ids=list(PARALLEL))
def test_parallel_guests_output_is_prefixed_per_line(kvm_required: None, guests: list[str]) -> None:
    proc = run("minikvm", "run", *guests)
    stops = assert_ran(proc)
    owners = assert_names_cover(list(stops), guests)
    outputs = split_prefixed(proc.stdout)
    assert set(outputs) <= set(owners), describe(proc)
    for name, guest in owners.items():
        assert outputs.get(name, b"") == expected_output(guest), f"{name}\n{describe(proc)}"


def test_log_dir_gets_each_guests_raw_output(kvm_required: None, tmp_path: Path) -> None:
    guests = ["hello", "hello", "counter", "multiplication"]
    logs = tmp_path / "logs" / "nested"  # created on demand
    proc = run("minikvm", "run", "--log-dir", str(logs), *guests)
    stops = assert_ran(proc)
    owners = assert_names_cover(list(stops), guests)
    assert sorted(p.name for p in logs.iterdir()) == sorted(f"{name}.log" for name in owners)
    for name, guest in owners.items():
        assert (logs / f"{name}.log").read_bytes() == expected_output(guest), name


def test_log_dir_with_quiet_single_guest(kvm_required: None, tmp_path: Path) -> None:
    proc = run("minikvm", "run", "--quiet", "--log-dir", str(tmp_path), "fibonacci")
    assert proc.returncode == 0 and proc.stderr == b"", describe(proc)
    assert proc.stdout == expected_output("fibonacci"), describe(proc)
    assert [p.name for p in tmp_path.iterdir()] == ["fibonacci.log"]
    assert (tmp_path / "fibonacci.log").read_bytes() == proc.stdout


def test_one_faulting_guest_makes_the_status_1(kvm_required: None) -> None:
    proc = run("minikvm", "run", "hello", "hctest")
    stops = assert_ran(proc, status=1)
    assert set(stops) == {"hello", "hctest"}, describe(proc)
    assert stops["hello"].startswith("halted") and "0x7f" in stops["hctest"], describe(proc)


# --- ends the VMM imposes: timeout, Ctrl-C, exhausted input ---------------------------


def test_timeout_stops_a_spinning_guest(kvm_required: None, tiny_guest: TinyGuest) -> None:
    spin = tiny_guest("spin", SPIN)
    started = time.monotonic()
    proc = run("minikvm", "run", "--timeout", "0.5", str(spin))
    elapsed = time.monotonic() - started
    stops = assert_ran(proc, status=124)
    assert proc.stdout == b"", describe(proc)
    assert "timed out" in stops["spin"], describe(proc)
    assert 0.5 <= elapsed < 10, f"took {elapsed:.2f} s\n{describe(proc)}"


def test_timeout_with_a_finished_guest(kvm_required: None, tiny_guest: TinyGuest) -> None:
    proc = run("minikvm", "run", "--timeout", "0.5", "hello", str(tiny_guest("spin", SPIN)))
    stops = assert_ran(proc, status=124)
    assert stops["hello"].startswith("halted") and "timed out" in stops["spin"], describe(proc)
    assert split_prefixed(proc.stdout) == {"hello": expected_output("hello")}, describe(proc)


def _start(*args: str) -> subprocess.Popen[bytes]:
    # SIGINT back to its default in the child, even if this test runs with it ignored (nohup, &).
    # PYTHONFAULTHANDLER: a child that hangs is ended with SIGABRT and shows where its threads were.
    return subprocess.Popen([command("minikvm"), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _end_hung(proc: subprocess.Popen[bytes]) -> None:
    """A child still running after the test gave up on it: fail with its threads' stacks."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate()
        pytest.fail(f"minikvm hung; its threads at SIGABRT:\n{err.decode(errors='replace')[-8000:]}")


def _read_until(stream: IO[bytes] | None, enough: Callable[[bytes], bool], timeout: float = 20) -> bytes:
    """Read a child's pipe until `enough(what was read)`, the pipe closes, or `timeout` passes."""
    assert stream is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while not enough(seen) and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.1)
        if ready:
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    return seen


@pytest.mark.parametrize("others", [0, 1], ids=["one-guest", "two-guests"])
def test_sigint_stops_running_guests(kvm_required: None, tiny_guest: TinyGuest, others: int) -> None:
    ready = tiny_guest("ready", SPIN_AFTER_READY)
    spin = tiny_guest("spin", SPIN)
    proc = _start("run", str(ready), *[str(spin)] * others)
    try:
        needle = READY_OUTPUT if not others else b"[ready] " + READY_OUTPUT
        before = _read_until(proc.stdout, lambda seen: needle in seen)
        assert needle in before, f"the guest never started: {before!r}"
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        _end_hung(proc)
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, before + rest, err)
    stops = assert_ran(done, status=130)
    assert done.stdout == needle, describe(done)
    assert set(stops) == ({"ready", "spin"} if others else {"ready"}), describe(done)
    assert all("interrupted" in what for what in stops.values()), describe(done)


@pytest.mark.timeout(120)
def test_sigint_at_any_moment_after_setup(kvm_required: None, tiny_guest: TinyGuest) -> None:
    """Ctrl-C while the vCPU threads start, or just after: always status 130 and words, never a crash.

    The header naming the guests is printed once they are set up; the signal
    follows it after 0 to 50 ms, over and over, to land in every phase.
    """
    guests = [str(tiny_guest("spin", SPIN))] * 4
    for attempt, delay in enumerate([0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05] * 3):
        proc = _start("run", *guests)
        try:
            header = _read_until(proc.stderr, lambda seen: seen.count(b"\n") >= len(guests))
            assert header.count(b"\n") >= len(guests), f"no header: {header!r}"
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            _end_hung(proc)
            raise
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, header + err)
        text = f"attempt {attempt}, SIGINT {delay * 1e3:g} ms after the header\n{describe(done)}"
        assert b"Traceback" not in done.stderr and b"internal error" not in done.stderr, text
        assert done.returncode == 130, text
        assert b"interrupted" in done.stderr.splitlines()[-1], text


@pytest.mark.parametrize("grace", [None, "0.2"], ids=["default-grace", "grace-0.2"])
def test_polling_an_exhausted_input_is_stopped(kvm_required: None, tiny_guest: TinyGuest,
                                               grace: str | None) -> None:
    args = ["--input-grace", grace] if grace else []
    started = time.monotonic()
    proc = run("minikvm", "run", *args, str(tiny_guest("poll", POLL_FOREVER)), stdin=b"")
    elapsed = time.monotonic() - started
    stops = assert_ran(proc, status=1)
    assert proc.stdout == b"", describe(proc)
    assert "waiting for input" in stops["poll"], describe(proc)
    assert elapsed < EOF_BOUND, f"took {elapsed:.2f} s\n{describe(proc)}"


@pytest.mark.parametrize("accel", ["auto", "emu"])
def test_echo_through_a_pipe(tiny_guest: TinyGuest, accel: str, request: pytest.FixtureRequest) -> None:
    if accel != "emu":
        request.getfixturevalue("kvm_required")
    data = b"abcq"
    proc = run("minikvm", "run", "--accel", accel, str(tiny_guest("echo", ECHO_UNTIL_Q)), stdin=data)
    stops = assert_ran(proc)
    assert proc.stdout == echo_output(data) == b"abc", describe(proc)
    assert "exit" in stops["echo"], describe(proc)


def test_echo_of_more_input_than_the_buffer_holds(kvm_required: None, tiny_guest: TinyGuest) -> None:
    """10000 bytes through a 4 KiB input buffer: back-pressure, nothing lost, in order."""
    alphabet = bytes(c for c in range(ord("a"), ord("z") + 1) if c != ord("q"))
    data = bytes(alphabet[i % len(alphabet)] for i in range(10_000)) + b"q" + b"after the end"
    proc = run("minikvm", "run", "--quiet", str(tiny_guest("echo", ECHO_UNTIL_Q)), stdin=data)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == echo_output(data), describe(proc)
    assert len(proc.stdout) == 10_000


def test_input_goes_to_the_first_guest_only(kvm_required: None, tiny_guest: TinyGuest) -> None:
    """The second guest sees end of input at once, and is stopped for waiting on it."""
    data = b"xyq"
    proc = run("minikvm", "run", str(tiny_guest("echo", ECHO_UNTIL_Q)), str(tiny_guest("poll", POLL_FOREVER)),
               stdin=data)
    stops = assert_ran(proc, status=1)
    assert "exit" in stops["echo"] and "waiting for input" in stops["poll"], describe(proc)
    assert split_prefixed(proc.stdout) == {"echo": echo_output(data)}, describe(proc)


# --- the software CPU ------------------------------------------------------------------


@pytest.mark.parametrize("guest", ["hello", "counter", "fibonacci", "hello_pm", "hello_64"])
def test_software_cpu_gives_the_same_output(guest: str) -> None:
    proc = run("minikvm", "run", "--accel", "emu", guest)
    stops = assert_ran(proc)
    assert proc.stdout == expected_output(guest), describe(proc)
    assert list(stops) == [guest], describe(proc)


def test_no_screenshot_where_ram_does_not_reach_the_screen_is_said(tmp_path: Path) -> None:
    shot = tmp_path / "s.png"
    proc = run("minikvm", "run", "--memory", "64K", "--screenshot", str(shot), "hello")
    assert proc.returncode == 0 and not shot.exists(), describe(proc)
    assert "no screenshot: its RAM (64 KiB) does not reach the VGA text screen" in proc.stderr.decode(), describe(proc)
