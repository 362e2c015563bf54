"""The interactive terminal: raw mode while guests run, restored on every way out.

Each test runs minikvm on a fresh pseudo-terminal that is its controlling
terminal (so Ctrl-C typed there is a real SIGINT) and compares the terminal
settings before and after.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

MINIKVM = str(Path(sys.prefix) / "bin" / "minikvm")
SPIN = bytes([0xEB, 0xFE])  # jmp $  (a real-mode guest that never exits)


class PtySession:
    def __init__(self, args: list[str]) -> None:
        self.master, self.slave = os.openpty()
        self.before = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(
            [MINIKVM, *args], stdin=self.slave, stdout=self.slave, stderr=self.slave,
            start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        self.output = b""

    def read_until(self, needle: bytes, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output and time.monotonic() < deadline:
            self._read(0.05)
        assert needle in self.output, self.output

    def _read(self, wait: float) -> None:
        ready, _, _ = select.select([self.master], [], [], wait)
        if ready:
            try:
                self.output += os.read(self.master, 4096)
            except OSError:
                pass

    def raw_mode_active(self) -> bool:
        return not termios.tcgetattr(self.slave)[3] & (termios.ICANON | termios.ECHO)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        self._read(0)
        if self.proc.poll() is None:
            self.proc.kill()
            pytest.fail(f"minikvm did not exit: {self.output!r}")
        return self.proc.returncode

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def spin_guest(tmp_path: Path) -> str:
    path = tmp_path / "spin.bin"
    path.write_bytes(SPIN)
    return str(path)


def session(args: list[str]) -> PtySession:
    return PtySession(args)


def assert_restored(s: PtySession) -> None:
    assert termios.tcgetattr(s.slave) == s.before, "terminal settings were not restored"
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
        deadline = time.monotonic() + 10
        while not s.raw_mode_active() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert s.raw_mode_active(), "raw mode was never entered"
        s.type(b"\x03")
        assert s.finish() == 130
        assert b"interrupted" in s.output
        assert_restored(s)
    finally:
        s.close()


def test_ctrl_a_x_quits(kvm_required: None, spin_guest: str) -> None:
    s = session(["run", spin_guest])
    try:
        deadline = time.monotonic() + 10
        while not s.raw_mode_active() and time.monotonic() < deadline:
            time.sleep(0.02)
        s.type(b"\x01h")
        s.read_until(b"Ctrl-A X quit")
        s.type(b"\x01x")
        assert s.finish() == 130
        assert b"quit (Ctrl-A X)" in s.output
        assert_restored(s)
    finally:
        s.close()


def test_sigterm_restores_the_terminal(kvm_required: None, spin_guest: str) -> None:
    s = session(["run", spin_guest])
    try:
        deadline = time.monotonic() + 10
        while not s.raw_mode_active() and time.monotonic() < deadline:
            time.sleep(0.02)
        s.proc.send_signal(signal.SIGTERM)
        assert s.finish() == 130
        assert b"terminated" in s.output
        assert_restored(s)
    finally:
        s.close()
