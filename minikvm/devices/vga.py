"""The VGA in 80x25 colour text mode (BIOS mode 3), as a guest and a viewer see it.

Two halves, both pure:

- the text buffer: 4000 bytes of guest RAM at 0xB8000, two bytes per cell
  (character, attribute). The guest writes it with plain stores, so there is
  nothing to trap; the machine reads it and `TextScreen` decodes it;
- the registers a text-mode driver touches through ports 0x3C0-0x3DF
  (`VgaCrtc`): the CRT controller's index/data pair at 0x3D4/0x3D5 (the
  cursor), and the attribute, sequencer, graphics and DAC registers an OS
  programs or probes, which remember what was written so a read-back works.
  Nothing here changes how the text is drawn: the screen is always 80x25 with
  the standard 16 colours.

Register facts follow IBM's VGA technical reference (the register tables for
mode 3 are the values the BIOS leaves behind).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from .layout import VGA

COLUMNS = 80
ROWS = 25
TEXT_BASE = 0xB8000  # colour text buffer (0xB0000 is the monochrome one, not modelled)
TEXT_BYTES = COLUMNS * ROWS * 2
TEXT_WINDOW_END = 0xC0000  # the 32 KiB window the colour text buffer is decoded in
BLANK_ATTRIBUTE = 0x07  # light grey on black: what the BIOS clears the screen to

# All the VGA ports of a colour adapter, 0x3C0-0x3DF (layout.VGA).
# (0x3B4/0x3B5/0x3BA are the monochrome aliases, used only when the
# miscellaneous output register's bit 0 is clear; not modelled.)
VGA_PORTS = VGA

# Port offsets from VGA_PORTS.base.
ATTR_INDEX = 0x00  # 0x3C0: attribute index/data, alternating on writes
ATTR_DATA_READ = 0x01  # 0x3C1
MISC_WRITE = 0x02  # 0x3C2 write: miscellaneous output; read: input status #0
SEQ_INDEX = 0x04  # 0x3C4
SEQ_DATA = 0x05  # 0x3C5
DAC_MASK = 0x06  # 0x3C6
DAC_READ_INDEX = 0x07  # 0x3C7 write; read: DAC state
DAC_WRITE_INDEX = 0x08  # 0x3C8
DAC_DATA = 0x09  # 0x3C9
FEATURE_READ = 0x0A  # 0x3CA
MISC_READ = 0x0C  # 0x3CC
GC_INDEX = 0x0E  # 0x3CE
GC_DATA = 0x0F  # 0x3CF
CRTC_INDEX = 0x14  # 0x3D4
CRTC_DATA = 0x15  # 0x3D5
INPUT_STATUS_1 = 0x1A  # 0x3DA read; write: feature control

# CRT controller registers.
CRTC_REGISTERS = 0x19  # 0x00-0x18
CRTC_CURSOR_START = 0x0A
CRTC_CURSOR_END = 0x0B
CRTC_START_HIGH = 0x0C
CRTC_START_LOW = 0x0D
CRTC_CURSOR_HIGH = 0x0E
CRTC_CURSOR_LOW = 0x0F
CRTC_VRETRACE_END = 0x11
CURSOR_DISABLE = 0x20  # cursor start register bit 5
CRTC_PROTECT = 0x80  # vertical retrace end bit 7: registers 0-7 are read-only
CRTC_OVERFLOW = 0x07
OVERFLOW_LINE_COMPARE_8 = 0x10  # the one overflow bit the protect bit leaves writable

# Input status #1: bit 0 "display disabled" (in a retrace), bit 3 vertical retrace.
STATUS1_DISPLAY_DISABLED = 0x01
STATUS1_VRETRACE = 0x08

ATTR_REGISTERS = 0x15
ATTR_INDEX_MASK = 0x1F
ATTR_PAS = 0x20  # palette address source: the index byte's bit 5, kept for read-back
SEQ_REGISTERS = 0x05
GC_REGISTERS = 0x09

# What the BIOS leaves in the registers after setting mode 3 (80x25, 9x16
# character cells, 400 lines). Cursor on scan lines 13-14 at offset 0.
MODE3_CRTC = bytes([0x5F, 0x4F, 0x50, 0x82, 0x55, 0x81, 0xBF, 0x1F, 0x00, 0x4F, 0x0D, 0x0E, 0x00,
                    0x00, 0x00, 0x00, 0x9C, 0x8E, 0x8F, 0x28, 0x1F, 0x96, 0xB9, 0xA3, 0xFF])
MODE3_ATTR = bytes([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D,
                    0x3E, 0x3F, 0x0C, 0x00, 0x0F, 0x08, 0x00])
MODE3_SEQ = bytes([0x03, 0x00, 0x03, 0x00, 0x02])
MODE3_GC = bytes([0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0E, 0x00, 0xFF])
MODE3_MISC = 0x67  # colour I/O addresses (0x3Dx), RAM enabled, 28 MHz clock, 400 lines

# The 16 text colours as the BIOS programs the DAC (6-bit components; the
# attribute palette maps colour 6 to DAC entry 0x14, the brown, and 8-15 to 0x38-0x3F).
_EGA_DAC = [(0, 0, 0), (0, 0, 42), (0, 42, 0), (0, 42, 42), (42, 0, 0), (42, 0, 42), (42, 21, 0),
            (42, 42, 42), (21, 21, 21), (21, 21, 63), (21, 63, 21), (21, 63, 63), (63, 21, 21),
            (63, 21, 63), (63, 63, 21), (63, 63, 63)]


def _mode3_dac() -> bytearray:
    dac = bytearray(256 * 3)
    for colour, dac_index in enumerate(MODE3_ATTR[:16]):
        dac[dac_index * 3:dac_index * 3 + 3] = bytes(_EGA_DAC[colour])
    return dac


# --- the text buffer ---------------------------------------------------------

# Code page 437 as the VGA's character generator draws it: 0x00 is blank,
# 0x01-0x1F and 0x7F are pictures (not control codes), 0x80-0xFF are the
# accented letters, box drawing and maths of the IBM PC character set.
CP437 = (" ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼"
         + "".join(chr(c) for c in range(0x20, 0x7F)) + "⌂"
         + bytes(range(0x80, 0x100)).decode("cp437"))
assert len(CP437) == 256


class Cell(NamedTuple):
    char: int  # the code point in code page 437
    attr: int  # bits 0-3 foreground, 4-6 background, 7 blink (or bright background)

    @property
    def foreground(self) -> int:
        return self.attr & 0x0F

    @property
    def background(self) -> int:
        """0-7: bit 7 is blink in mode 3, not a colour."""
        return (self.attr >> 4) & 0x07

    @property
    def glyph(self) -> str:
        return CP437[self.char]


@dataclass(frozen=True)
class TextScreen:
    """One 80x25 text screen: the raw buffer bytes and the cursor (row, column), None when hidden.

    Equal screens compare equal by their bytes and cursor, so a viewer can
    redraw only on change without decoding anything.
    """

    raw: bytes
    cursor: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if len(self.raw) != TEXT_BYTES:
            raise ValueError(f"a text screen is {TEXT_BYTES} bytes, not {len(self.raw)}")

    @classmethod
    def from_bytes(cls, data: bytes, cursor: tuple[int, int] | None = None) -> TextScreen:
        return cls(bytes(data), cursor)

    @classmethod
    def blank(cls) -> TextScreen:
        return cls(blank_text_buffer(), (0, 0))

    def cell(self, row: int, column: int) -> Cell:
        offset = (row * COLUMNS + column) * 2
        return Cell(self.raw[offset], self.raw[offset + 1])

    @cached_property
    def rows(self) -> tuple[tuple[Cell, ...], ...]:
        raw = self.raw
        return tuple(tuple(Cell(raw[i], raw[i + 1]) for i in range(start, start + COLUMNS * 2, 2))
                     for start in range(0, TEXT_BYTES, COLUMNS * 2))

    def text(self) -> list[str]:
        """The 25 lines as Unicode text (CP437 pictures included), trailing spaces stripped."""
        chars = self.raw[0::2]
        return ["".join(CP437[c] for c in chars[r * COLUMNS:(r + 1) * COLUMNS]).rstrip(" ")
                for r in range(ROWS)]


def blank_text_buffer() -> bytes:
    """A cleared screen: spaces, light grey on black."""
    return bytes([0x20, BLANK_ATTRIBUTE]) * (COLUMNS * ROWS)


# --- the registers -------------------------------------------------------------


class VgaCrtc:
    """The VGA's port registers, 0x3C0-0x3DF (register at VGA_PORTS; offsets are from its base).

    A wide access (the common `outw 0x3D4` that sets index and data at once)
    is taken a byte at a time, as the ISA bus splits it for an 8-bit device.
    """

    def __init__(self) -> None:
        self.crtc = bytearray(MODE3_CRTC)
        self.crtc_index = 0
        self.attr = bytearray(MODE3_ATTR)
        self.attr_index = ATTR_PAS  # PAS set: the screen is on
        self.attr_flip_flop_data = False  # False: the next 0x3C0 write is an index
        self.seq = bytearray(MODE3_SEQ)
        self.seq_index = 0
        self.gc = bytearray(MODE3_GC)
        self.gc_index = 0
        self.misc = MODE3_MISC
        self.feature = 0
        self.dac = _mode3_dac()
        self.dac_mask = 0xFF
        self.dac_read_index = 0  # in DAC components (entry * 3 + r/g/b)
        self.dac_write_index = 0
        self.dac_reading = False  # the DAC state register tells which index was set last
        self._retrace = False  # toggled on each 0x3DA read

    # -- the port interface

    def read(self, offset: int, size: int) -> int:
        return sum(self._read_byte(offset + i) << (8 * i) for i in range(size))

    def write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            self._write_byte(offset + i, (value >> (8 * i)) & 0xFF)

    def _read_byte(self, offset: int) -> int:
        if offset == CRTC_INDEX:
            return self.crtc_index
        if offset == CRTC_DATA:
            return self.crtc[self.crtc_index] if self.crtc_index < CRTC_REGISTERS else 0
        if offset == INPUT_STATUS_1:
            # Reading it resets the attribute flip-flop (a driver's way to get
            # to a known state), and a retrace must come and go, or the
            # classic "wait for vertical retrace" loops never end.
            self.attr_flip_flop_data = False
            self._retrace = not self._retrace
            return STATUS1_VRETRACE | STATUS1_DISPLAY_DISABLED if self._retrace else 0
        if offset == ATTR_INDEX:
            return self.attr_index
        if offset == ATTR_DATA_READ:
            index = self.attr_index & ATTR_INDEX_MASK
            return self.attr[index] if index < ATTR_REGISTERS else 0
        if offset == MISC_WRITE:
            return 0  # input status #0: no switch sense, no CRT interrupt
        if offset == SEQ_INDEX:
            return self.seq_index
        if offset == SEQ_DATA:
            return self.seq[self.seq_index] if self.seq_index < SEQ_REGISTERS else 0
        if offset == DAC_MASK:
            return self.dac_mask
        if offset == DAC_READ_INDEX:
            return 0x03 if self.dac_reading else 0x00
        if offset == DAC_WRITE_INDEX:
            return self.dac_write_index // 3
        if offset == DAC_DATA:
            value = self.dac[self.dac_read_index]
            self.dac_read_index = (self.dac_read_index + 1) % len(self.dac)
            return value
        if offset == FEATURE_READ:
            return self.feature
        if offset == MISC_READ:
            return self.misc
        if offset == GC_INDEX:
            return self.gc_index
        if offset == GC_DATA:
            return self.gc[self.gc_index] if self.gc_index < GC_REGISTERS else 0
        return 0xFF  # 0x3D0-0x3D3 and the like: nothing answers

    def _write_byte(self, offset: int, value: int) -> None:
        if offset == CRTC_INDEX:
            self.crtc_index = value
        elif offset == CRTC_DATA:
            self._write_crtc(self.crtc_index, value)
        elif offset == ATTR_INDEX:
            if self.attr_flip_flop_data:
                index = self.attr_index & ATTR_INDEX_MASK
                if index < ATTR_REGISTERS:
                    self.attr[index] = value
            else:
                self.attr_index = value & (ATTR_INDEX_MASK | ATTR_PAS)
            self.attr_flip_flop_data = not self.attr_flip_flop_data
        elif offset == MISC_WRITE:
            self.misc = value
        elif offset == SEQ_INDEX:
            self.seq_index = value
        elif offset == SEQ_DATA:
            if self.seq_index < SEQ_REGISTERS:
                self.seq[self.seq_index] = value
        elif offset == DAC_MASK:
            self.dac_mask = value
        elif offset == DAC_READ_INDEX:
            self.dac_read_index, self.dac_reading = value * 3, True
        elif offset == DAC_WRITE_INDEX:
            self.dac_write_index, self.dac_reading = value * 3, False
        elif offset == DAC_DATA:
            self.dac[self.dac_write_index] = value & 0x3F  # 6-bit DAC
            self.dac_write_index = (self.dac_write_index + 1) % len(self.dac)
        elif offset == GC_INDEX:
            self.gc_index = value
        elif offset == GC_DATA:
            if self.gc_index < GC_REGISTERS:
                self.gc[self.gc_index] = value
        elif offset == INPUT_STATUS_1:
            self.feature = value  # feature control is written here, read at 0x3CA

    def _write_crtc(self, index: int, value: int) -> None:
        if index >= CRTC_REGISTERS:
            return
        if index <= CRTC_OVERFLOW and self.crtc[CRTC_VRETRACE_END] & CRTC_PROTECT:
            # The protect bit guards the horizontal and vertical timing a
            # wrong value could damage an old monitor with; only the line
            # compare bit in the overflow register stays writable.
            if index == CRTC_OVERFLOW:
                keep = self.crtc[index] & ~OVERFLOW_LINE_COMPARE_8
                self.crtc[index] = keep | (value & OVERFLOW_LINE_COMPARE_8)
            return
        self.crtc[index] = value

    # -- what the viewer needs

    @property
    def start_address(self) -> int:
        """The cell shown at the top left, in cells from TEXT_BASE (hardware scrolling moves it)."""
        return (self.crtc[CRTC_START_HIGH] << 8) | self.crtc[CRTC_START_LOW]

    @property
    def cursor_address(self) -> int:
        """The cursor location register, in cells from TEXT_BASE."""
        return (self.crtc[CRTC_CURSOR_HIGH] << 8) | self.crtc[CRTC_CURSOR_LOW]

    @property
    def cursor_visible(self) -> bool:
        start = self.crtc[CRTC_CURSOR_START]
        return not start & CURSOR_DISABLE and (start & 0x1F) <= (self.crtc[CRTC_CURSOR_END] & 0x1F)

    def cursor_position(self) -> tuple[int, int] | None:
        """(row, column) of the cursor on the visible screen, None when hidden or off it."""
        if not self.cursor_visible:
            return None
        offset = self.cursor_address - self.start_address
        if not 0 <= offset < COLUMNS * ROWS:
            return None
        return divmod(offset, COLUMNS)

    def visible_address(self) -> int:
        """Where in guest memory the visible 4000 bytes start.

        The start address moves the window for hardware scrolling; one that
        would run past the 32 KiB colour window falls back to TEXT_BASE
        rather than show memory that is not the text buffer.
        """
        address = TEXT_BASE + 2 * self.start_address
        return address if address + TEXT_BYTES <= TEXT_WINDOW_END else TEXT_BASE


def read_screen(read: Callable[[int, int], bytes], crtc: VgaCrtc) -> TextScreen:
    """The screen as the guest left it; `read(address, length)` reads guest RAM (GuestMemory.read)."""
    return TextScreen(read(crtc.visible_address(), TEXT_BYTES), crtc.cursor_position())
