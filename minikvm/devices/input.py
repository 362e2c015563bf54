"""The input side shared by the UART and the hypercall port.

The console thread fills an `InputBuffer`; the vCPU thread takes from it
without ever blocking. An `EofWatch` tells a guest that is merely polling an
empty input apart from one that waits for input that will never come.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

CONSUMED_LIMIT = 1 << 20


class InputBuffer:
    """A thread-safe, bounded byte queue from the console to one guest."""

    def __init__(self, capacity: int = 4096, on_data: Callable[[], None] | None = None) -> None:
        if capacity <= 0:
            raise ValueError(f"input buffer capacity must be positive, not {capacity}")
        self.capacity = capacity
        # Called (on the feeding thread) after new bytes arrive, e.g. to let
        # the UART raise its IRQ; the machine may set it after construction.
        self.on_data = on_data
        self._bytes: deque[int] = deque()
        self._closed = False
        # What the guest has taken, so a run can be replayed with the same input (bounded).
        self.consumed = bytearray()
        self._lock = threading.Lock()

    def feed(self, data: bytes) -> int:
        """Queue what fits and return how many bytes that was.

        The rest is not queued: a feeder that wants no loss keeps it and
        feeds it again once the guest has read some (back-pressure).
        """
        with self._lock:
            if self._closed:
                raise ValueError("input fed after it was closed")
            accepted = data[: self.capacity - len(self._bytes)]
            self._bytes.extend(accepted)
        if accepted and self.on_data is not None:
            self.on_data()
        return len(accepted)

    def close(self) -> None:
        """End of input: once the queued bytes are read, no more will come."""
        with self._lock:
            self._closed = True

    def read_byte(self) -> int | None:
        """The next byte, or None when none is queued (never blocks)."""
        with self._lock:
            if not self._bytes:
                return None
            byte = self._bytes.popleft()
            if len(self.consumed) < CONSUMED_LIMIT:
                self.consumed.append(byte)
            return byte

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._bytes)

    @property
    def at_eof(self) -> bool:
        with self._lock:
            return self._closed and not self._bytes


class EofWatch:
    """Decides when a guest polling an exhausted input is stuck.

    Devices call `poll_empty` each time the guest asks for input and gets
    none while the input is at end of file. The guest counts as stuck once
    those polls have gone on for `grace` seconds without a pause longer than
    `grace` (or SHORTEST_PAUSE, whichever is longer): a pause restarts the
    count, because a guest that looks for input now and then between long
    computations is working, not waiting. Time comes in as an argument, so
    tests need no clock.
    """

    # Even a tight polling loop leaves microseconds between two polls: a pause must be longer than
    # that, or a tiny --input-grace would see every poll as the first of a new run, and never stop.
    SHORTEST_PAUSE = 0.05

    def __init__(self, grace: float = 0.5) -> None:
        self.grace = grace
        self._pause = max(grace, self.SHORTEST_PAUSE)
        self._first: float | None = None  # start of the current run of polls
        self._last = 0.0

    def poll_empty(self, now: float) -> bool:
        if self._first is None or now - self._last > self._pause:
            self._first = now
        self._last = now
        return now - self._first >= self.grace

    def reset(self) -> None:
        """The guest made progress (got data, wrote output): start over."""
        self._first = None
