"""The terminal and standard streams as a shell hands them over: raw mode while guests run, restored on
every way out; a background job; a non-blocking stdout.

Each terminal test runs minikvm on a fresh pseudo-terminal that is its
controlling terminal (so Ctrl-C typed there is a real SIGINT) and compares
the terminal settings before and after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..ptysession import PtySession

pytestmark = pytest.mark.timeout(60)

MINIKVM = str(Path(sys.prefix) / "bin" / "minikvm")
SPIN = bytes([0xEB, 0xFE])  # jmp $  (a real-mode guest that never exits)
# Real mode: a '>' prompt through PUTCHAR, then GETCHAR over and over (ABI.md's hypercall port 0x500).
PROMPT = bytes([
    0xBA, 0x00, 0x05,  # mov dx, 0x500
    0xB3, 0x3E,        # mov bl, '>'
    0xB0, 0x01,        # mov al, 1 (PUTCHAR)
    0xEE,              # out dx, al
    0xB0, 0x02,        # 1: mov al, 2 (GETCHAR)
    0xEE,              # out dx, al
    0xEC,              # in al, dx
    0xEB, 0xFA,        # jmp 1b
])
FLOOD_BYTES = 256 * 1024
# Real mode: FLOOD_BYTES bytes 0, 1, … 255, 0, 1, … through the UART, then HLT (interrupts are off: a clean end).
FLOOD = bytes([
    0xBA, 0xF8, 0x03,                                  # mov dx, 0x3f8 (COM1 THR)
    0x66, 0xB9, *FLOOD_BYTES.to_bytes(4, "little"),    # mov ecx, FLOOD_BYTES
    0x31, 0xC0,                                        # xor ax, ax
    0xEE,                                              # 1: out dx, al
    0xFE, 0xC0,                                        # inc al
    0x66, 0x49,                                        # dec ecx
    0x75, 0xF9,                                        # jnz 1b
    0xF4,                                              # hlt
])


@pytest.fixture
def spin_guest(tmp_path: Path) -> str:
    path = tmp_path / "spin.bin"
    path.write_bytes(SPIN)
    return str(path)


def session(args: list[str]) -> PtySession:
    return PtySession([MINIKVM, *args])


def assert_restored(s: PtySession) -> None:
    assert s.restored(), "terminal settings were not restored"
    assert b"Traceback" not in s.output, s.output


def test_normal_exit_restores_the_terminal(kvm_required: None) -> None:
    s = session(["run", "hello"])
    try:
        assert s.finish() == 0
        assert b"Hello, KVM!\r\n" in s.output  # ONLCR kept: "\n" still starts a new line
        assert_restored(s)
    finally:
        s.close()


def test_guest_fault_restores_the_terminal(kvm_required: None) -> None:
    s = session(["run", "hctest"])
    try:
        assert s.finish() == 1
        assert b"unknown hypercall 0x7f" in s.output
        assert_restored(s)
    finally:
        s.close()


def test_ctrl_c_stops_a_runaway_guest_and_restores(kvm_required: None, spin_guest: str) -> None:
    s = session(["run", spin_guest])
    try:
        s.read_until(b"")  # started
        assert s.wait_raw(), "raw mode was never entered"
        s.type(b"\x03")
        assert s.finish() == 130
        assert b"interrupted" in s.output
        assert_restored(s)
    finally:
        s.close()


def test_ctrl_a_x_quits(kvm_required: None, spin_guest: str) -> None:
    s = session(["run", spin_guest])
    try:
        s.wait_raw()
        s.type(b"\x01h")
        s.read_until(b"Ctrl-A X quit")
        s.type(b"\x01x")
        assert s.finish() == 130
        assert b"quit (Ctrl-A X)" in s.output
        assert_restored(s)
    finally:
        s.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2, signal.SIGALRM,
                                    signal.SIGXCPU], ids=lambda signum: signum.name)
def test_a_fatal_signal_stops_the_guests_and_restores_the_terminal(kvm_required: None, spin_guest: str,
                                                                   signum: signal.Signals) -> None:
    """Signals whose default action kills the process stop the guests as Ctrl-C does: status 130."""
    s = session(["run", spin_guest])
    try:
        assert s.wait_raw(), "raw mode was never entered"
        s.proc.send_signal(signum)
        assert s.finish() == 130
        assert f"terminated ({signum.name})".encode() in s.output
        assert_restored(s)
    finally:
        s.close()


def test_a_terminal_that_hangs_up_ends_the_run_as_interrupted(kvm_required: None, spin_guest: str,
                                                              tmp_path: Path) -> None:
    """Its window closed: SIGHUP, and a terminal that can no longer be restored. stderr goes to a file
    here, so the report has somewhere to go."""
    log = tmp_path / "stderr.log"
    with log.open("wb") as stderr:
        s = PtySession([MINIKVM, "run", spin_guest], preexec=lambda: os.dup2(stderr.fileno(), 2))
    try:
        assert s.wait_raw(), "raw mode was never entered"
        s.hang_up()
        assert s.proc.wait(timeout=30) == 130, log.read_text()
        assert "terminated (SIGHUP)" in log.read_text()
    finally:
        s.close()


@pytest.mark.parametrize("quiet", [False, True], ids=["notes", "quiet"])
def test_a_background_job_neither_changes_nor_reads_the_terminal(kvm_required: None, tmp_path: Path,
                                                                 quiet: bool) -> None:
    """`minikvm run … &`: changing the terminal's modes or reading it from the background would stop
    minikvm (SIGTTOU, SIGTTIN) for good. It runs with no input instead, as with </dev/null."""
    guest = tmp_path / "prompt.bin"
    guest.write_bytes(PROMPT)
    s = PtySession([MINIKVM, "run", *(["--quiet"] if quiet else []), str(guest)], background=True)
    try:
        assert s.finish() == 1, s.explain()  # the guest waits for input that never comes
        assert b">" in s.output
        assert (b"running in the background" in s.output) is not quiet, s.explain()
        if not quiet:
            assert b"waiting for input that will never come" in s.output
        assert_restored(s)
    finally:
        s.close()


def test_a_non_blocking_stdout_gets_every_byte(kvm_required: None, tmp_path: Path) -> None:
    """A caller may hand over stdout with O_NONBLOCK set (the flag belongs to the open pipe, which
    minikvm shares): a full pipe then gives EAGAIN, which means a slow reader, not a failed output."""
    guest = tmp_path / "flood.bin"
    guest.write_bytes(FLOOD)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    with os.fdopen(read_end, "rb", buffering=0) as reader:
        proc = subprocess.Popen([MINIKVM, "run", str(guest)], stdin=subprocess.DEVNULL, stdout=write_end,
                                stderr=subprocess.PIPE)
        os.close(write_end)
        received = bytearray()
        while chunk := reader.read(4096):
            received += chunk
            time.sleep(0.05)  # slower than the guest writes, so the pipe keeps filling up
        stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert proc.wait() == 0, stderr
    assert received == bytes(range(256)) * (FLOOD_BYTES // 256), stderr
