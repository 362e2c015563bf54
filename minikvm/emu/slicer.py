"""Ends the software CPU's time slices: one sleeping thread per vCPU that calls emu_stop at the deadline.

Unicorn's own `emu_start(timeout=...)` starts a watchdog thread per call that
polls every few microseconds: bench/emu.py measured 20,000 context switches a
second and 27% of the guest's speed lost to it. This thread sleeps until the
deadline instead.

A stop can be lost: emu_stop before emu_start has reset its stop flag does
nothing. So a due stop is repeated every millisecond until the run loop says
the slice is over (`end`).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

_RETRY_SECONDS = 0.001


class Stoppable(Protocol):
    def emu_stop(self) -> None: ...


class Slicer:
    def __init__(self, engine: Stoppable) -> None:
        self._engine = engine
        self._changed = threading.Condition()
        self._deadline: float | None = None  # the running slice's end (time.monotonic); None: none runs
        self._expired = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def begin(self, deadline: float) -> None:
        """A slice is about to start; it must end by `deadline`."""
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="emu-slicer", daemon=True)
                self._thread.start()
            self._deadline = deadline
            self._expired = False
            self._changed.notify()

    def end(self) -> bool:
        """The slice is over (emu_start returned); True if it was stopped by its deadline or `stop_now`."""
        with self._changed:
            expired, self._expired = self._expired, False
            self._deadline = None
            return expired

    def stop_now(self) -> None:
        """End the running slice, if one runs (any thread)."""
        with self._changed:
            if self._deadline is not None:
                self._deadline = 0.0
                self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        with self._changed:
            while not self._closed:
                if self._deadline is None:
                    self._changed.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._changed.wait(remaining)
                    continue
                self._expired = True
                self._engine.emu_stop()
                self._changed.wait(_RETRY_SECONDS)
