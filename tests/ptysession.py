"""A command on a fresh pseudo-terminal that is its controlling terminal, for the terminal tests.

Ctrl-C typed there is a real SIGINT, and the terminal settings before and after
can be compared. Used by the e2e terminal and 1K OS sessions and by the
robustness tests (descriptor exhaustion, internal errors).
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
from collections.abc import Callable

# `command &` in an interactive shell: the command in a process group of its own while the shell's group
# keeps the terminal. A job the terminal stops (SIGTTOU, SIGTTIN) would stay stopped: say so and end it.
_BACKGROUND_JOB = """
import os, signal, subprocess, sys
job = subprocess.Popen(sys.argv[1:], process_group=0)
_, status = os.waitpid(job.pid, os.WUNTRACED)
if os.WIFSTOPPED(status):
    print(f"the job was stopped by {signal.Signals(os.WSTOPSIG(status)).name}", file=sys.stderr)
    os.killpg(job.pid, signal.SIGKILL)
    os.waitpid(job.pid, 0)
    sys.exit(128 + os.WSTOPSIG(status))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


class PtySession:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 preexec: Callable[[], None] | None = None, background: bool = False) -> None:
        """`background`: run the command as a shell runs `command &` (proc is then that shell's stand-in)."""
        self.argv = argv
        self.master, self.slave = os.openpty()
        self.before = termios.tcgetattr(self.slave)

        def setup() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            if preexec is not None:
                preexec()

        if background:
            argv = [sys.executable, "-c", _BACKGROUND_JOB, *argv]
        self.proc = subprocess.Popen(argv, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                     start_new_session=True, preexec_fn=setup, env=env,
                                     close_fds=preexec is None)
        self.output = b""
        self.mark = 0  # read_until looks at the output after this point

    def explain(self) -> str:
        return f"terminal output so far:\n{self.output.decode(errors='replace')}"

    def read_until(self, needle: bytes, timeout: float = 60) -> bytes:
        """Wait for `needle` after the mark; move the mark past it; return what came before it."""
        deadline = time.monotonic() + timeout
        while needle not in self.output[self.mark:] and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._read(0)
                break
            self._read(0.05)
        at = self.output.find(needle, self.mark)
        assert at >= 0, f"{needle!r} never appeared\n" + self.explain()
        seen, self.mark = self.output[self.mark:at], at + len(needle)
        return seen

    def raw_mode_active(self) -> bool:
        return not termios.tcgetattr(self.slave)[3] & (termios.ICANON | termios.ECHO)

    def wait_raw(self, timeout: float = 10) -> bool:
        """Wait until the terminal is in raw mode (minikvm's guests are running); False if never."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.raw_mode_active():
                return True
            self._read(0.02)
        return False

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, timeout: float = 30) -> int | None:
        """Wait for the exit (reading the output); None if it did not exit in time (then it is killed)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        self._read(0)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return None
        return self.proc.returncode

    def restored(self) -> bool:
        return termios.tcgetattr(self.slave) == self.before

    def session_processes(self) -> list[int]:
        """Processes still in the command's session (the command's own children, say)."""
        left = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getsid(int(entry)) == self.proc.pid:
                        left.append(int(entry))
                except OSError:
                    pass
        return left

    def hang_up(self) -> None:
        """Close the terminal, as closing its window does: the kernel sends the command SIGHUP."""
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
        os.close(self.slave)

    def _read(self, wait: float) -> None:
        ready, _, _ = select.select([self.master], [], [], wait)
        if ready:
            try:
                self.output += os.read(self.master, 65536)
            except OSError:
                pass
