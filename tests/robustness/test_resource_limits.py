"""When the host runs out: memory, address space, file descriptors (VMs), disk; and internal errors.

What is right (DESIGN.md's statuses, decided here for the cases it leaves open):

- Every VM is built before any guest runs, so running out while building
  them (--memory the host cannot give, the address-space limit, the file
  descriptors that VMs and vCPUs need) is an input/host error: exactly one
  line `minikvm: error: ...` naming the problem, status 2, no guest output,
  nothing left running, the terminal as it was.
- Running out once guests run (stdout on a full disk) is a failure of the
  run: status 1, one line naming it, no traceback.
- An internal exception (a bug in minikvm) anywhere: status 1, one line
  `minikvm: internal error: ...`, the terminal restored, and the process
  exits within a few seconds even if a guest is still spinning.

(The bad-count cases — more guests than free memory or file limits allow,
checked up front — are in tests/e2e/test_errors.py.)
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ..ptysession import PtySession
from .guests import FLOOD, assemble
from .randguest import kvm_can_run
from .support import REPO, minikvm_command

pytestmark = pytest.mark.timeout(180)

MIB, GIB = 1 << 20, 1 << 30
HLT = b"\xf4"
SPIN = b"\xeb\xfe"
HELLO = bytes([0xBA, 0x00, 0x05, 0xB0, 0x01, 0xB3, ord("h"), 0xEE, 0xB3, ord("i"), 0xEE, 0xB3, 0x0A, 0xEE, 0xF4])
EXIT_BOUND = 5.0  # seconds an internal error may take to end the process


@pytest.fixture(params=["kvm", "emu"])
def accel(request: pytest.FixtureRequest) -> str:
    if request.param == "kvm":
        request.getfixturevalue("kvm_required")
        if not kvm_can_run("real"):
            pytest.skip("this host's KVM cannot run real mode")
    return request.param


def image(tmp_path: Path, name: str, code: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(code)
    return str(path)


def run(args: list[str], preexec: Callable[[], None] | None = None, timeout: float = 60,
        stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([minikvm_command(), *args], stdin=subprocess.DEVNULL, stdout=stdout,
                          stderr=subprocess.PIPE, preexec_fn=preexec, close_fds=preexec is None, timeout=timeout)


def one_line(proc: subprocess.CompletedProcess[bytes], status: int, *patterns: str) -> str:
    text = f"status {proc.returncode}\nstdout: {proc.stdout!r}\nstderr:\n{proc.stderr.decode(errors='replace')}"
    assert b"Traceback" not in proc.stderr, text
    assert proc.returncode == status, text
    lines = proc.stderr.decode(errors="replace").splitlines()
    assert len(lines) == 1, f"stderr is not one line\n{text}"
    for pattern in patterns:
        assert re.search(pattern, lines[0], re.IGNORECASE), f"{pattern!r} is not in the line\n{text}"
    return lines[0]


def mem_total() -> int:
    with open("/proc/meminfo") as meminfo:
        return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal:"))


# --- memory ---------------------------------------------------------------------------------------


def test_more_memory_than_the_host_has(accel: str, tmp_path: Path) -> None:
    size = min(64 * GIB, -(-2 * mem_total() // GIB) * GIB)  # twice the RAM, in GiB (the flag's maximum is 64G)
    if size <= mem_total():
        pytest.skip("this host has 32 GiB of RAM or more: --memory cannot ask for twice that")
    proc = run(["run", "--accel", accel, "--memory", f"{size // GIB}G", image(tmp_path, "hlt.bin", HLT)])
    one_line(proc, 2, r"memory")
    assert proc.stdout == b""


def test_memory_refused_by_the_address_space_limit(accel: str, tmp_path: Path) -> None:
    """RLIMIT_AS (ulimit -v) below the guest's RAM: the mmap fails, and that is said in one line."""
    def small_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1536 * MIB, resource.RLIM_INFINITY))

    proc = run(["run", "--accel", accel, "--memory", "2G", image(tmp_path, "hlt.bin", HLT)],
               preexec=small_address_space)
    one_line(proc, 2, r"cannot allocate|memory", r"2048 MiB|2G|2 GiB")


def test_many_guests_at_once(accel: str, tmp_path: Path) -> None:
    """64 guests in parallel, 64 VMs: all run, all stop, all are reported."""
    path = image(tmp_path, "hello.bin", HELLO)
    proc = run(["run", "--accel", accel, "--memory", "64K", *[path] * 64], timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.count(b"] hi\n") == 64
    assert len(re.findall(rb"halted \(HLT\)", proc.stderr)) == 64


# --- file descriptors: /dev/kvm running out of VMs part way ---------------------------------------

NOFILE = 64


def occupy_fds(count: int) -> Callable[[], None]:
    """In the child: RLIMIT_NOFILE 64, and `count` descriptors already taken (from fd 10 up), so the
    VMs and vCPUs of 8 guests run out of descriptors at a different point for each `count` (minikvm's
    up-front check sees only the limit)."""
    def setup() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        fd = os.open("/dev/null", os.O_RDONLY)
        for target in range(10, 10 + count):
            os.dup2(fd, target)

    return setup


def test_vms_running_out_of_file_descriptors_part_way(kvm_required: None, tmp_path: Path) -> None:
    """Each run either runs all 8 guests or fails before any guest runs with one line, status 2.

    Seen here: a KVM_CREATE_VM/KVM_CREATE_VCPU failure named only 'ioctl 0xae01'/'ioctl 0xae41'; the
    vCPU's mmap (which duplicates the fd) and the keyboard's wake-up pipe raised OSError, reported as
    'internal error' with status 1 after the guest list had been printed.
    """
    path = image(tmp_path, "hlt.bin", HLT)
    problems = []
    for count in range(30, 55, 2):
        proc = run(["run", "--accel", "kvm", *[path] * 8], preexec=occupy_fds(count))
        if proc.returncode == 0:
            assert len(re.findall(rb"halted \(HLT\)", proc.stderr)) == 8, proc.stderr.decode()
            continue
        try:
            one_line(proc, 2, r"open files|file descriptor|ulimit", r"KVM|VM|vCPU|guest")
        except AssertionError as err:
            problems.append(f"{count} descriptors taken: {str(err).splitlines()[0]}\n"
                            f"  {proc.stderr.decode(errors='replace').strip()[-300:]}")
    assert not problems, "\n".join(problems)


def test_running_out_of_descriptors_on_a_terminal_restores_it(kvm_required: None, tmp_path: Path) -> None:
    path = image(tmp_path, "hlt.bin", HLT)
    for count in range(30, 55, 4):
        session = PtySession([minikvm_command(), "run", "--accel", "kvm", *[path] * 8], preexec=occupy_fds(count))
        try:
            status = session.finish(timeout=30)
            assert status is not None, f"{count}: minikvm did not exit: {session.output[-500:]!r}"
            assert session.restored(), f"{count}: the terminal settings were not restored"
            assert not session.session_processes(), f"{count}: processes left behind"
            assert b"Traceback" not in session.output, session.output[-2000:]
        finally:
            session.close()


# --- the output device is full ---------------------------------------------------------------------


def test_stdout_on_a_full_device(accel: str, tmp_path: Path) -> None:
    """`minikvm run hello > /dev/full`: the guest ran, its output cannot be written (ENOSPC), status 1.

    The output is written by its own thread, so a guest as short as this one may have halted before
    the write failed: then its stop line comes first and a second line says the output was lost."""
    with open("/dev/full", "wb") as full:
        proc = run(["run", "--accel", accel, image(tmp_path, "hello.bin", HELLO)], stdout=full.fileno())
    text = f"status {proc.returncode}\nstderr:\n{proc.stderr.decode(errors='replace')}"
    assert b"Traceback" not in proc.stderr and proc.returncode == 1, text
    lines = proc.stderr.decode().splitlines()
    assert 1 <= len(lines) <= 2 and "standard output failed (No space left on device)" in lines[-1], text


# --- internal errors --------------------------------------------------------------------------------


def inject(place: str, args: list[str]) -> PtySession:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MINIKVM_DEBUG", None)
    return PtySession([sys.executable, "-m", "tests.robustness.inject", place, *args], env=env)


@pytest.mark.parametrize("place", ["tick", "device", "report"])
def test_an_internal_error_restores_the_terminal_and_exits(accel: str, place: str, tmp_path: Path) -> None:
    if place == "device":
        guest = str(assemble(tmp_path, "uart", FLOOD, N=1, PORT=0x3F8, FOREVER=1))
        args = ["--mode", "protected"]
    else:
        guest = image(tmp_path, "spin.bin" if place == "tick" else "hello.bin", SPIN if place == "tick" else HELLO)
        args = []
    session = inject(place, ["--accel", accel, *args, guest])
    try:
        # The report case ends at once (the guest halts first): its raw spell may be over before we look.
        raw = session.wait_raw()
        assert raw or place == "report", f"the terminal never went raw: {session.output[-1000:]!r}"
        status = session.finish(timeout=EXIT_BOUND)
        assert status is not None, (f"minikvm did not exit within {EXIT_BOUND} s of an internal error in {place}: "
                                    f"{session.output[-1000:]!r}")
        assert session.restored(), "the terminal settings were not restored"
        assert status == 1, (status, session.output[-2000:])
        text = session.output.decode(errors="replace")
        assert "Traceback" not in text, text[-3000:]
        assert re.search(r"internal error.*planted bug", text), text[-2000:]
    finally:
        session.close()
