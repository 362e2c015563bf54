"""Ends the software CPU's time slices: one sleeping thread per vCPU that calls emu_stop at the deadline.

Unicorn's own `emu_start(timeout=...)` starts a watchdog thread per call that
polls every few microseconds: bench/emu.py measured 20,000 context switches a
second and 27% of the guest's speed lost to it. This thread sleeps until the
deadline instead.

A stop can be lost: emu_stop before emu_start has reset its stop flag does
nothing. So a due stop is repeated every millisecond until the run loop says
the slice is over (`end`).

`end` also says whether the slice was stopped or returned by itself: Unicorn
returns by itself only after HLT, and a stop lands at a block boundary, where
the byte before EIP can be 0xF4 without being a HLT (seen: the displacement of
a JMP), so the bytes alone cannot tell.
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
        self._running = False  # between begin and end
        self._deadline: float | None = None  # the running slice's end (time.monotonic), if it has one
        self._stopped_at: float | None = None  # when a stop was first asked for in this slice
        self._closed = False
        self._thread: threading.Thread | None = None

    def begin(self, deadline: float | None) -> None:
        """A slice is about to start; it must end by `deadline`, or only when asked (None)."""
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="emu-slicer", daemon=True)
                self._thread.start()
            self._running = True
            self._deadline = deadline
            self._stopped_at = None
            self._changed.notify()

    def end(self, returned_at: float) -> bool:
        """The slice is over: emu_start returned at `returned_at` (time.monotonic).

        True when a stop had been asked for by then, so the return is ours; False when Unicorn
        returned by itself (after HLT)."""
        with self._changed:
            self._running = False
            return self._stopped_at is not None and self._stopped_at <= returned_at

    def end_by(self, deadline: float) -> None:
        """The running slice must end by `deadline` too (a timer programmed from inside it)."""
        with self._changed:
            if self._running and (self._deadline is None or deadline < self._deadline):
                self._deadline = deadline
                self._changed.notify()

    def stop_now(self) -> None:
        """End the running slice, if one runs (another thread: this one repeats the stop until it takes)."""
        with self._changed:
            if self._running:
                self._note_stop()
                self._deadline = 0.0
                self._changed.notify()

    def stopped_inside(self) -> None:
        """The vCPU's own thread stopped the slice from inside it (a hook): record it, nothing to repeat."""
        with self._changed:
            if self._running:
                self._note_stop()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _note_stop(self) -> None:
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()

    def _run(self) -> None:
        with self._changed:
            while not self._closed:
                if not self._running or self._deadline is None:
                    self._changed.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._changed.wait(remaining)
                    continue
                self._note_stop()
                self._engine.emu_stop()
                self._changed.wait(_RETRY_SECONDS)
