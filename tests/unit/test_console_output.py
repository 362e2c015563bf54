"""The output multiplexer: attribution under concurrency, order, the backlog bound, giving up on a reader,
and a non-blocking output.

These use real pipes and threads (the mux is all about them) but no guests.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from minikvm.console import GIVE_UP_SECONDS, OUTPUT_BACKLOG, OutputMux

LINE = re.compile(rb"\[(g\d)\] (\d*)\n")


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture
def switch_often() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so a race shows within one run."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def read_all(fd: int, into: bytearray) -> threading.Thread:
    def pump() -> None:
        while chunk := os.read(fd, 65536):
            into.extend(chunk)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def test_every_line_keeps_its_prefix_and_order_with_writers_and_ticks_racing(pipe: tuple[int, int],
                                                                             switch_often: None) -> None:
    """Four guests print numbered lines in pieces while the control thread ticks and flushes; every
    terminal line must be '[gN] number' and each guest's numbers must arrive in order, none lost."""
    read_end, write_end = pipe
    mux = OutputMux(write_end, colour=False, prefix=True)
    sinks = [mux.sink(f"g{i}", i) for i in range(4)]
    lines = 2000
    received = bytearray()
    reader = read_all(read_end, received)

    def guest(index: int) -> None:
        for n in range(lines):
            text = f"{n}\n".encode()
            for piece in (text[:1], text[1:]):  # a line in two writes: held, then completed
                sinks[index](piece)

    stop = threading.Event()

    def control() -> None:
        while not stop.is_set():
            mux.tick(time.monotonic() + 1)  # as if every held line were old: flush them mid-line
            sinks[0].flush()

    threads = [threading.Thread(target=guest, args=(i,)) for i in range(4)]
    ticker = threading.Thread(target=control)
    ticker.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    ticker.join()
    for sink in sinks:
        sink.flush()
    with mux.lock:
        mux.drain()
    os.close(write_end)
    reader.join()

    # A line flushed mid-way is ended by the next guest's output and continued under a new prefix, so
    # the line breaks do not say where a number ends; the digits, in order, must all be there.
    digits: dict[bytes, bytearray] = {f"g{i}".encode(): bytearray() for i in range(4)}
    for line in received.splitlines(keepends=True):
        match = LINE.fullmatch(line)
        assert match, f"an unattributed terminal line: {line!r}"
        digits[match[1]] += match[2]
    expected = "".join(str(n) for n in range(lines)).encode()
    assert all(value == expected for value in digits.values()), {k: len(v) for k, v in digits.items()}


def test_a_reader_that_stops_reading_blocks_only_up_to_the_backlog_and_give_up_frees_the_writers(
        pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    mux = OutputMux(write_end, colour=False, prefix=False)
    sink = mux.sink("g", 0)
    written = 0
    finished = threading.Event()

    def guest() -> None:
        nonlocal written
        chunk = b"x" * 4095 + b"\n"
        for _ in range(4 * OUTPUT_BACKLOG // len(chunk)):  # four times what the backlog holds
            sink(chunk)
            written += len(chunk)
        finished.set()

    thread = threading.Thread(target=guest, daemon=True)
    thread.start()
    time.sleep(0.5)
    assert not finished.is_set(), "nobody reads, yet the guest wrote everything: the backlog is unbounded"
    # What the guest got rid of is the pipe's capacity plus at most the backlog plus one chunk.
    assert written <= OUTPUT_BACKLOG + 4096 + (1 << 20), written
    started = time.monotonic()
    mux.give_up()
    assert finished.wait(GIVE_UP_SECONDS + 2), "give_up did not free a guest waiting on the backlog"
    with mux.lock:
        mux.drain()  # bounded too, once given up
    assert time.monotonic() - started <= GIVE_UP_SECONDS + 2
    os.close(read_end)


def test_a_closed_reader_closes_the_mux_once_and_stops_output(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    mux = OutputMux(write_end, colour=False, prefix=False)
    calls: list[str] = []
    mux.on_closed = lambda: calls.append(mux.close_reason)
    sink = mux.sink("g", 0)
    os.close(read_end)
    sink(b"hello\n")
    deadline = time.monotonic() + 5
    while not mux.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    sink(b"more\n")
    with mux.lock:
        mux.drain()  # returns at once: there is nowhere to write
    assert mux.closed and calls == ["Broken pipe"]


def test_held_output_is_written_at_a_tick_and_a_line_end_at_once(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    mux = OutputMux(write_end, colour=False, prefix=False)
    sink = mux.sink("g", 0)
    sink(b"prompt> ")  # no line end: waits for a tick (or the guest waiting for input)
    os.set_blocking(read_end, False)
    time.sleep(0.1)
    with pytest.raises(BlockingIOError):
        os.read(read_end, 100)
    mux.tick(time.monotonic())
    os.set_blocking(read_end, True)
    assert os.read(read_end, 100) == b"prompt> "
    sink(b"line\n")
    assert os.read(read_end, 100) == b"line\n"


def test_a_non_blocking_output_waits_for_a_slow_reader_instead_of_failing(pipe: tuple[int, int]) -> None:
    """A caller may hand us stdout with O_NONBLOCK set (the flag belongs to the open pipe, which we
    share): a full pipe then gives EAGAIN, which means a slow reader, not a failed output."""
    read_end, write_end = pipe
    os.set_blocking(write_end, False)
    mux = OutputMux(write_end, colour=False, prefix=False)
    sink = mux.sink("g", 0)
    expected = bytes(range(256)) * 1024  # 256 KiB: four times what a pipe holds by default
    received = bytearray()

    def read_slowly() -> None:
        while chunk := os.read(read_end, 4096):
            received.extend(chunk)
            time.sleep(0.001)  # slower than the writer, so the pipe keeps filling up

    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    sink(expected)
    with mux.lock:
        mux.drain()
    os.close(write_end)
    reader.join()
    assert not mux.closed, f"the output was given up: {mux.close_reason}"
    assert received == expected
