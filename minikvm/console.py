"""The terminal side: guest output (colours, prefixes, log files) and keyboard input.

Output from several guests is serialised by one lock, attributed with a
`[name]` prefix at each line start, and written by one writer thread, so a
reader that stops reading never blocks a guest in write(). Input comes from
a thread that reads stdin into the first guest's InputBuffer; on a tty the
terminal is in raw mode while guests run and is restored on every way out,
a fatal signal included; a background job leaves it alone.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from typing import BinaryIO

from .devices.input import InputBuffer
from .machine import STOP_SIGNALS

_COLOURS = ("32", "36", "33", "35", "34", "92", "96", "93", "95", "94", "31", "91")
_RESET = b"\x1b[0m"

RECENT_BYTES = 16384
PARTIAL_LINE_SECONDS = 0.1  # an unfinished line older than this is shown (several guests)
# Bytes accepted but not yet written before a guest has to wait: the bound on output memory when the
# reader is slower than the guests (a pipe into a slow program, nobody reading at all).
OUTPUT_BACKLOG = 1 << 20
WRITE_NOW_BYTES = 65536  # queued output written without waiting for a line end or a pause
GIVE_UP_SECONDS = 1.0  # after Ctrl-C, how long a stuck reader is waited for before its output is dropped
CTRL_A = 0x01
CTRL_C = 0x03
HELP = ("\r\nminikvm keys: Ctrl-A X quit, Ctrl-A H this help, Ctrl-A Ctrl-A send Ctrl-A, "
        "Ctrl-A C send Ctrl-C; Ctrl-C stops minikvm; everything else goes to the guest\r\n")


def colour_for(index: int) -> bytes:
    return f"\x1b[{_COLOURS[index % len(_COLOURS)]}m".encode()


class OutputMux:
    """All guests' output into one file descriptor, in order, through one writer thread.

    Callers queue bytes under `lock`; the writer thread does the write() calls.
    A reader that stops reading (a full pipe) holds up only the writer: guests
    wait once OUTPUT_BACKLOG bytes are queued, and `give_up` (Ctrl-C) bounds
    every wait, so the VMM can always stop.
    """

    def __init__(self, fd: int, colour: bool, prefix: bool) -> None:
        self.fd = fd
        self.colour = colour
        self.prefix = prefix
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)  # queue, writer or give-up state changed
        self.closed = False  # the output failed (a closed pipe, a full disk): dropped from then on
        self.close_reason = ""
        self.on_closed: Callable[[], None] = lambda: None
        self.recent = bytearray()  # the tail of what guests wrote, for a view that repaints the terminal
        self.open_line: GuestOutput | None = None  # whose unfinished line the terminal shows
        self.sinks: list[GuestOutput] = []
        self._queue: list[bytes] = []
        self._queued = 0  # bytes accepted and not yet written (in the queue or being written)
        self._due = False  # the queue is to be written now, not at the next line end or pause
        self._writing = False
        self._writer: threading.Thread | None = None
        self._give_up_at: float | None = None

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def sink(self, name: str, index: int, log: BinaryIO | None = None) -> GuestOutput:
        self.sinks.append(GuestOutput(self, name, index, log))
        return self.sinks[-1]

    def tick(self, now: float) -> None:
        """Called every few tens of milliseconds: show what has waited long enough (a prompt)."""
        for sink in self.sinks:
            sink.flush_if_idle(now)
        with self.lock:
            self.write_soon()

    def write(self, data: bytes, now: bool) -> None:
        """Queue bytes (the caller holds `lock`); `now`: write them at once, not with the next batch.

        Waits while the backlog is over its bound, unless given up on."""
        if self.closed or not data:
            return
        self._queue.append(data)
        self._queued += len(data)
        if now or self._queued >= WRITE_NOW_BYTES:
            self.write_soon()
        while self._queued > OUTPUT_BACKLOG and not self.closed and self._wait():
            pass

    def remember(self, data: bytes) -> None:
        self.recent += data
        del self.recent[:-RECENT_BYTES]

    def drain(self) -> None:
        """Wait until everything queued is written (the caller holds `lock`): our words come after the guests'."""
        self.write_soon()
        while (self._queue or self._writing) and not self.closed and self._wait():
            pass

    def give_up(self) -> None:
        """Ctrl-C: wait for a reader at most GIVE_UP_SECONDS more; what it has not taken by then is lost."""
        with self.lock:
            if self._give_up_at is None:
                self._give_up_at = time.monotonic() + GIVE_UP_SECONDS
            self._changed.notify_all()

    def _wait(self) -> bool:
        """One wait for a change (the caller holds `lock`); False once the reader is given up on."""
        if self._give_up_at is None:
            self._changed.wait()
            return True
        remaining = self._give_up_at - time.monotonic()
        if remaining <= 0:
            return False
        self._changed.wait(remaining)
        return True

    def write_soon(self) -> None:
        """Have the writer take the queue now (the caller holds `lock`)."""
        if not self._queue:
            return
        self._due = True
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_forever, name="output", daemon=True)
            self._writer.start()
        self._changed.notify_all()

    def _write_forever(self) -> None:
        # A daemon thread: if the reader never reads again, this one stays in write() and the process
        # can still exit.
        while True:
            with self.lock:
                while not self._due:
                    self._changed.wait()
                data = b"".join(self._queue)
                self._queue.clear()
                self._due = False
                self._writing = True
            failure = self._write_all(data)
            with self.lock:
                self._writing = False
                self._queued -= len(data)
                if failure is not None:  # a closed pipe, a full disk (/dev/full): the output has nowhere to go
                    self.closed = True
                    self.close_reason = failure.strerror or str(failure)
                    self._queue.clear()
                    self._queued = 0
                self._changed.notify_all()
            if failure is not None:
                self.on_closed()
                return

    def _write_all(self, data: bytes) -> OSError | None:
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(self.fd, view):]
                except BlockingIOError:
                    # Our caller's stdout is non-blocking (O_NONBLOCK belongs to the open file, which we
                    # share): a full pipe is a slow reader, so wait for room as a blocking write would.
                    # Whoever waits for this thread is still bounded by give_up.
                    writable = select.poll()
                    writable.register(self.fd, select.POLLOUT)
                    writable.poll()
        except OSError as err:
            return err
        return None


class GuestOutput:
    """One guest's output: callable with bytes, as devices expect.

    With several guests every terminal line must say whose it is, so a guest's
    unfinished line is held back until its newline, or until the guest waits
    for input (`flush`: a prompt must show). A held line that is already on
    the screen when another guest writes is ended there, and its continuation
    gets the prefix again. The log file always gets the exact bytes.
    All state is changed under the mux's lock: the guest's thread writes, the
    control thread flushes.
    """

    def __init__(self, mux: OutputMux, name: str, index: int, log: BinaryIO | None) -> None:
        self.mux = mux
        self.log = log
        self._at_line_start = True
        self._held = bytearray()  # an unfinished line not yet written (several guests only)
        self._held_since = 0.0
        label = f"[{name}] ".encode() if mux.prefix else b""
        if mux.colour:
            self._open, self._close = colour_for(index), _RESET
        else:
            self._open = self._close = b""
        self._label = self._open + label if label else b""

    def __call__(self, data: bytes) -> None:
        if self.log is not None:
            self.log.write(data)
        with self.mux.lock:
            if not self._label:
                self._emit(self._open + data + self._close if self._open else data, b"\n" in data)
                return
            if not self._held:
                self._held_since = time.monotonic()
            self._held += data
            end = self._held.rfind(b"\n") + 1
            if end == 0 and len(self._held) < RECENT_BYTES:
                return
            complete = bytes(self._held[:end or len(self._held)])
            del self._held[:end or len(self._held)]
            self._emit(complete, True)

    def flush_if_idle(self, now: float) -> None:
        """A line left unfinished for a while is a prompt, or a guest between prints: show it."""
        with self.mux.lock:
            if self._held and now - self._held_since >= PARTIAL_LINE_SECONDS:
                self._flush_held()

    def flush(self) -> None:
        """Show everything written so far, an unfinished line too."""
        with self.mux.lock:
            self._flush_held()
            self.mux.write_soon()
        if self.log is not None:
            self.log.flush()

    def _flush_held(self) -> None:
        if self._held:
            partial = bytes(self._held)
            self._held.clear()
            self._emit(partial, True)

    def _emit(self, data: bytes, now: bool) -> None:
        """Attribute and queue a chunk (the caller holds the mux's lock)."""
        mux = self.mux
        if mux.closed or not data:
            return
        mux.remember(data)
        if self._label:
            owner = mux.open_line
            ended = b""
            if owner is not None and owner is not self:
                # Another guest's unfinished line is on the screen: end it there.
                ended = b"\n"
                owner._at_line_start = True
            data = ended + self._decorate(data)
            mux.open_line = None if self._at_line_start else self
        mux.write(data, now)  # one write: a wait for the backlog must not fall between the two

    def _decorate(self, data: bytes) -> bytes:
        out = bytearray()
        for line in data.splitlines(keepends=True):
            if self._at_line_start:
                out += self._label
            out += line
            self._at_line_start = line.endswith(b"\n")
        return bytes(out + self._close)


def terminate(signum: int, frame: object) -> None:
    """A signal handler: a killing signal unwinds like Ctrl-C, so every cleanup runs."""
    raise KeyboardInterrupt(f"terminated ({signal.Signals(signum).name})")


class Keyboard:
    """Feeds stdin to a guest; raw mode on a tty, with Ctrl-A escapes.

    Use as a context manager: leaving it restores the terminal, whatever
    way the run ended. While it is entered, a signal that would kill the
    process where it stands (SIGHUP, SIGQUIT, …) stops the guests as Ctrl-C
    does, so that way out restores the terminal too. A background job
    (`minikvm run … &`) neither changes nor reads the terminal.
    """

    def __init__(self, target: InputBuffer | None, on_quit: Callable[[], None],
                 fd: int | None = None, message: Callable[[str], None] | None = None) -> None:
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.target = target
        self.on_quit = on_quit
        self.message = message or (lambda text: None)
        self.is_tty = os.isatty(self.fd)
        self.background = self.is_tty and not self._in_foreground()
        self._saved: list | None = None
        self._caught: list[int] = []  # signals turned into KeyboardInterrupt while we are entered
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # wakes the stdin thread at once when we leave
        self._thread: threading.Thread | None = None
        self._escape = False

    def _in_foreground(self) -> bool:
        """Whether our process group owns the terminal: from the background, job control stops us for
        good when we change its modes (SIGTTOU) or read it (SIGTTIN), before --timeout can fire."""
        try:
            return os.tcgetpgrp(self.fd) == os.getpgrp()
        except OSError:  # a terminal that is not our controlling one: no job control applies
            return True

    def __enter__(self) -> Keyboard:
        self._catch_fatal_signals()
        try:
            self._start()
        except BaseException:  # a signal already (KeyboardInterrupt): no __exit__ would follow to restore
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        if self.background:
            self.message("minikvm: running in the background: leaving the terminal alone "
                         "(the guests see end of input)\n")
            if self.target is not None:
                self.target.close()
            return
        if self.is_tty:
            self._saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSANOW)
            attrs = termios.tcgetattr(self.fd)
            # Keep output post-processing so a guest's "\n" still starts a new line,
            # and Ctrl-C as SIGINT so a runaway guest can always be stopped; Ctrl-Z
            # and Ctrl-\ are disabled (a suspended VMM would leave the shell raw).
            attrs[1] |= termios.OPOST | termios.ONLCR
            attrs[3] |= termios.ISIG
            attrs[6][termios.VSUSP] = attrs[6][termios.VQUIT] = b"\0"
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        self._thread = threading.Thread(target=self._pump, name="stdin", daemon=True)
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self.restore()  # first: a signal landing in what follows must find the terminal restored
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=1)
        os.close(self._wake_r)
        os.close(self._wake_w)
        for signum in self._caught:
            signal.signal(signum, signal.SIG_DFL)
        self._caught.clear()

    def restore(self) -> None:
        if self._saved is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            except termios.error:
                pass  # the terminal hung up (SIGHUP): there is nothing left to restore
            self._saved = None  # only now: an interrupt before the call leaves it for another try

    def _catch_fatal_signals(self) -> None:
        """Signals still at their default action, which kills the process, raise KeyboardInterrupt instead
        (SIGINT does so already, SIGTERM gets the command line's handler); ignored ones (nohup) stay so."""
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, terminate)
                self._caught.append(signum)

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.fd, self._wake_r], [], [])
                if self._wake_r in ready:
                    return
                data = os.read(self.fd, 4096)
            except (OSError, ValueError):
                data = b""
            if not data:
                if self.target is not None:
                    self.target.close()
                return
            if self.is_tty:
                data = self._escapes(data)
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        # Back-pressure: what the guest has not room for waits here, not lost.
        while data and self.target is not None and not self._stop.is_set():
            accepted = self.target.feed(data)
            data = data[accepted:]
            if data:
                self._stop.wait(0.01)

    def _escapes(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if self._escape:
                self._escape = False
                if byte in (ord("x"), ord("X")):
                    self.on_quit()
                    return bytes(out)
                if byte in (ord("h"), ord("H"), ord("?")):
                    self.message(HELP)
                elif byte == CTRL_A:
                    out.append(CTRL_A)
                elif byte in (ord("c"), ord("C")):
                    out.append(CTRL_C)
            elif byte == CTRL_A:
                self._escape = True
            else:
                out.append(byte)
        return bytes(out)


class VgaView:
    """A guest's 80x25 VGA text screen, live at the top of the terminal.

    The guest's serial output keeps scrolling in a region below the screen
    (a terminal scroll region), so neither hides the other and nothing is
    lost; leaving restores the full-height scroll region.
    """

    SCREEN_ROWS = 25

    def __init__(self, mux: OutputMux, terminal_rows: int) -> None:
        self.mux = mux
        self.terminal_rows = terminal_rows
        self.active = False

    @classmethod
    def fits(cls, terminal_rows: int) -> bool:
        return terminal_rows >= cls.SCREEN_ROWS + 4

    def start(self) -> None:
        """Clear the terminal into screen + separator + serial region, and replay the serial tail there."""
        first = self.SCREEN_ROWS + 2
        region_rows = self.terminal_rows - first + 1
        with self.mux.lock:
            tail = b"\n".join(bytes(self.mux.recent).split(b"\n")[-region_rows:])
        self._write(f"\x1b[2J\x1b[{first - 1};1H\x1b[2m{'─' * 80}\x1b[0m"
                    f"\x1b[{first};{self.terminal_rows}r\x1b[{first};1H", tail)
        self.active = True

    def draw(self, screen: object) -> None:
        from .screen import render_ansi

        # Save the cursor (it belongs to the serial region), paint, restore.
        self._write("\x1b7" + render_ansi(screen) + "\x1b8")  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.active:
            # Resetting the scroll region homes the cursor: put it back under the serial region.
            self._write("\x1b7\x1b[r\x1b8\n")
            self.active = False

    def _write(self, text: str, then: bytes = b"") -> None:
        with self.mux.lock:
            self.mux.write(text.encode() + then, True)


class ScreenWatcher:
    """Follows guests' VGA text screens: the live view, and what is left at the end."""

    def __init__(self, screens: list[Callable[[], object]], view: VgaView | None, always: bool) -> None:
        self.screens = screens  # one reader per guest (Machine.screen)
        self.initial = [read() for read in screens]
        self.view = view  # live view of the first guest, when the terminal allows it
        self.always = always  # --vga on: show it before the guest writes anything
        self._shown: object = None
        self._finished = False

    def changed(self, index: int) -> bool:
        return self.screens[index]() != self.initial[index]

    def tick(self) -> None:
        if self.view is None or self._finished:
            return
        screen = self.screens[0]()
        if not self.view.active:
            if not (self.always or screen != self.initial[0]):
                return
            self.view.start()
        if screen != self._shown:
            self.view.draw(screen)
            self._shown = screen

    def finish(self) -> None:
        """The last draw, then hand the terminal back (safe to call twice: cleanup paths do)."""
        self.tick()
        self._finished = True
        if self.view is not None:
            self.view.stop()

    @property
    def shown_live(self) -> bool:
        return self._shown is not None
