"""Running the installed `minikvm` as a user would, measuring what it costs and how fast it stops."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def minikvm_command() -> str:
    for candidate in (Path(sys.prefix) / "bin" / "minikvm", REPO / ".venv" / "bin" / "minikvm"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError("the minikvm command is not installed: run 'make .venv/.installed'")


@dataclass
class CliRun:
    argv: list[str]
    status: int  # the exit status, or -N for signal N
    stdout: bytes
    stderr: bytes
    peak_rss: int  # bytes (the child's own ru_maxrss, from wait4)
    wall: float

    def describe(self) -> str:
        return (f"command: {' '.join(self.argv)}\nstatus: {self.status}\npeak RSS: {self.peak_rss >> 10} KiB\n"
                f"stdout: {len(self.stdout)} bytes {self.stdout[:200]!r}\n"
                f"stderr:\n{self.stderr.decode(errors='replace')[-3000:]}")


def _status(raw: int) -> int:
    return -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else os.WEXITSTATUS(raw)


def run_cli(args: list[str], stdin: bytes | None = b"", timeout: float = 60) -> CliRun:
    """Run `minikvm ARGS`, reading all its stdout; stdin is `stdin` then EOF (None: /dev/null)."""
    argv = [minikvm_command(), *args]
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as inp:
        if stdin is not None:
            inp.write(stdin)
            inp.seek(0)
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=inp if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        out = bytearray()
        deadline = started + timeout
        fd = proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                break
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                out += chunk
        _, raw, usage = os.wait4(proc.pid, 0)
        proc.returncode = _status(raw)
        proc.stdout.close()
        wall = time.monotonic() - started
        err.seek(0)
        return CliRun(argv, _status(raw), bytes(out), err.read(), usage.ru_maxrss * 1024, wall)


@dataclass
class Interrupted:
    argv: list[str]
    status: int | None  # None: still running when given up on (and then killed)
    seconds: float  # from the signal to the exit
    stdout_bytes: int
    stderr: bytes

    def describe(self) -> str:
        return (f"command: {' '.join(self.argv)}\nstatus: {self.status}\nexit {self.seconds:.2f} s after the signal\n"
                f"stdout: {self.stdout_bytes} bytes\nstderr:\n{self.stderr.decode(errors='replace')[-2000:]}")


def interrupt_after(args: list[str], run_for: float, sig: int = signal.SIGINT, read_stdout: bool = True,
                    stdin_open: bool = False, give_up: float = 10.0) -> Interrupted:
    """Start `minikvm ARGS`, let it run `run_for` seconds, send `sig`, and time how long it takes to exit.

    `read_stdout=False` leaves stdout unread, so a guest that prints fills the pipe and minikvm blocks
    writing it (a terminal paused with Ctrl-S does the same). `stdin_open` keeps stdin an open pipe
    nobody writes to, as a terminal nobody types at.
    """
    argv = [minikvm_command(), *args]
    stdin_r, stdin_w = os.pipe()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=stdin_r if stdin_open else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err)
        os.close(stdin_r)
        assert proc.stdout is not None
        count = [0]
        stop_reading = threading.Event()

        def drain() -> None:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            while not stop_reading.is_set():
                ready, _, _ = select.select([fd], [], [], 0.1)
                if ready:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        return
                    count[0] += len(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        if read_stdout:
            reader.start()
        try:
            time.sleep(run_for)
            sent = time.monotonic()
            proc.send_signal(sig)
            try:
                status: int | None = proc.wait(timeout=give_up)
            except subprocess.TimeoutExpired:
                status = None
            seconds = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            stop_reading.set()
            if reader.is_alive():
                reader.join()
            proc.stdout.close()
            os.close(stdin_w)
        err.seek(0)
        return Interrupted(argv, status, seconds, count[0], err.read())
