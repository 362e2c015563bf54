"""The interactive terminal: raw mode while guests run, restored on every way out.

Each test runs minikvm on a fresh pseudo-terminal that is its controlling
terminal (so Ctrl-C typed there is a real SIGINT) and compares the terminal
settings before and after.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from ..ptysession import PtySession

pytestmark = pytest.mark.timeout(60)

MINIKVM = str(Path(sys.prefix) / "bin" / "minikvm")
SPIN = bytes([0xEB, 0xFE])  # jmp $  (a real-mode guest that never exits)


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


def test_sigterm_restores_the_terminal(kvm_required: None, spin_guest: str) -> None:
    s = session(["run", spin_guest])
    try:
        s.wait_raw()
        s.proc.send_signal(signal.SIGTERM)
        assert s.finish() == 130
        assert b"terminated" in s.output
        assert_restored(s)
    finally:
        s.close()
