"""The terminal side: guest output (colours, prefixes, log files) and keyboard input.

Output from several guests is serialised by one lock and attributed with a
`[name]` prefix at each line start. Input comes from a thread that reads
stdin into the first guest's InputBuffer; on a tty the terminal is in raw
mode while guests run and is restored on every way out.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import tty
from collections.abc import Callable
from typing import BinaryIO

from .devices.input import InputBuffer

_COLOURS = ("32", "36", "33", "35", "34", "92", "96", "93", "95", "94", "31", "91")
_RESET = b"\x1b[0m"

CTRL_A = 0x01
CTRL_C = 0x03
HELP = ("\r\nminikvm keys: Ctrl-A X quit, Ctrl-A H this help, Ctrl-A Ctrl-A send Ctrl-A, "
        "Ctrl-A C send Ctrl-C; Ctrl-C stops minikvm; everything else goes to the guest\r\n")


def colour_for(index: int) -> bytes:
    return f"\x1b[{_COLOURS[index % len(_COLOURS)]}m".encode()


class OutputMux:
    """All guests' output into one stream, whole chunks at a time."""

    def __init__(self, stream: BinaryIO, colour: bool, prefix: bool) -> None:
        self.stream = stream
        self.colour = colour
        self.prefix = prefix
        self.lock = threading.Lock()
        self.closed = False  # the reader went away (a closed pipe): output is dropped from then on
        self.on_closed: Callable[[], None] = lambda: None

    def sink(self, name: str, index: int, log: BinaryIO | None = None) -> GuestOutput:
        return GuestOutput(self, name, index, log)


class GuestOutput:
    """One guest's output: callable with bytes, as devices expect."""

    def __init__(self, mux: OutputMux, name: str, index: int, log: BinaryIO | None) -> None:
        self.mux = mux
        self.log = log
        self._at_line_start = True
        self._pending = False
        label = f"[{name}] ".encode() if mux.prefix else b""
        if mux.colour:
            self._open, self._close = colour_for(index), _RESET
            self._label = self._open + label
        else:
            self._open = self._close = b""
            self._label = label

    def __call__(self, data: bytes) -> None:
        if self.log is not None:
            self.log.write(data)
        if self._label:
            data = self._decorate(data)
        elif self._open:
            data = self._open + data + self._close
        with self.mux.lock:
            if self.mux.closed:
                return
            try:
                self.mux.stream.write(data)
                if b"\n" in data:
                    self.mux.stream.flush()
                    self._pending = False
                else:
                    self._pending = True
            except BrokenPipeError:
                self.mux.closed = True
        if self.mux.closed:
            self.mux.on_closed()

    def _decorate(self, data: bytes) -> bytes:
        out = bytearray()
        for line in data.splitlines(keepends=True):
            if self._at_line_start:
                out += self._label
            out += line
            self._at_line_start = line.endswith(b"\n")
        if self._open:
            out += self._close
        return bytes(out)

    def flush(self) -> None:
        """Push out a partial line (a prompt) before the guest waits for input."""
        if self._pending:
            with self.mux.lock:
                self._pending = False
                if self.mux.closed:
                    return
                try:
                    self.mux.stream.flush()
                except BrokenPipeError:
                    self.mux.closed = True
            if self.mux.closed:
                self.mux.on_closed()
        if self.log is not None:
            self.log.flush()


class Keyboard:
    """Feeds stdin to a guest; raw mode on a tty, with Ctrl-A escapes.

    Use as a context manager: leaving it restores the terminal, whatever
    way the run ended.
    """

    def __init__(self, target: InputBuffer | None, on_quit: Callable[[], None],
                 fd: int | None = None, message: Callable[[str], None] | None = None) -> None:
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.target = target
        self.on_quit = on_quit
        self.message = message or (lambda text: None)
        self.is_tty = os.isatty(self.fd)
        self._saved: list | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._escape = False

    def __enter__(self) -> Keyboard:
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
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.restore()
        if self._thread is not None:
            self._thread.join(timeout=1)

    def restore(self) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                if not ready:
                    continue
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
