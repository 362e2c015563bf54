"""The VGA text screen decoded from its bytes, and the VGA ports driven as a text-mode driver would."""

from __future__ import annotations

import pytest

from minikvm.devices.bus import Bus
from minikvm.devices.vga import (
    CP437,
    TEXT_BASE,
    TEXT_BYTES,
    VGA_PORTS,
    Cell,
    TextScreen,
    VgaCrtc,
    blank_text_buffer,
    read_screen,
)

CRTC_INDEX, CRTC_DATA = 0x3D4, 0x3D5
STATUS1 = 0x3DA
ATTR, ATTR_READ = 0x3C0, 0x3C1
VRETRACE = 0x08


def screen_bytes(cells: dict[tuple[int, int], tuple[int, int]]) -> bytes:
    """A cleared screen with some cells set: {(row, column): (char, attr)}."""
    raw = bytearray(blank_text_buffer())
    for (row, column), (char, attr) in cells.items():
        raw[(row * 80 + column) * 2:(row * 80 + column) * 2 + 2] = bytes([char, attr])
    return bytes(raw)


def text_at(row: int, column: int, text: bytes, attr: int = 0x07) -> dict[tuple[int, int], tuple[int, int]]:
    return {(row, column + i): (c, attr) for i, c in enumerate(text)}


def vga_bus() -> tuple[Bus, VgaCrtc]:
    bus, crtc = Bus(), VgaCrtc()
    bus.register(*VGA_PORTS, crtc, "VGA")
    return bus, crtc


def set_crtc(bus: Bus, index: int, value: int) -> None:
    bus.write(CRTC_INDEX, 1, index)
    bus.write(CRTC_DATA, 1, value)


# --- the text buffer ---------------------------------------------------------


def test_cells_decode_character_and_attribute() -> None:
    screen = TextScreen.from_bytes(screen_bytes({(0, 0): (ord("A"), 0x1E), (24, 79): (ord("z"), 0xCF)}))
    assert screen.cell(0, 0) == Cell(ord("A"), 0x1E)
    assert (screen.cell(0, 0).foreground, screen.cell(0, 0).background) == (0x0E, 0x01)
    last = screen.rows[24][79]
    assert last == Cell(ord("z"), 0xCF)
    assert (last.foreground, last.background) == (0x0F, 0x04)  # bit 7 is blink, not part of the colour
    assert len(screen.rows) == 25 and all(len(row) == 80 for row in screen.rows)
    assert screen.rows[12][40] == Cell(0x20, 0x07)


def test_text_strips_trailing_spaces_and_keeps_inner_ones() -> None:
    screen = TextScreen.from_bytes(screen_bytes(text_at(0, 2, b"Hello,  world") | text_at(3, 0, b"x")))
    lines = screen.text()
    assert len(lines) == 25
    assert lines[0] == "  Hello,  world"
    assert lines[1] == "" and lines[3] == "x"


def test_text_uses_code_page_437() -> None:
    raw = bytes([0x01, 0x03, 0xC9, 0xCD, 0xBB, 0x82, 0xDB, 0xB0, 0xE1, 0x7F, 0x00, 0x41])
    screen = TextScreen.from_bytes(screen_bytes(text_at(5, 0, raw)))
    # NUL is a blank cell; 0x01-0x1F and 0x7F are pictures, not control characters.
    assert screen.text()[5] == "☺♥╔═╗é█░ß⌂ A"
    assert len(CP437) == 256 and CP437[0x1B] == "←" and CP437[0xFF] == "\xa0"


def test_equal_screens_compare_equal_and_any_change_shows() -> None:
    base = screen_bytes(text_at(1, 1, b"same"))
    a, b = TextScreen.from_bytes(base, (1, 5)), TextScreen.from_bytes(bytearray(base), (1, 5))
    assert a == b and hash(a) == hash(b)
    assert a != TextScreen.from_bytes(base, (1, 6))  # the cursor moved
    assert a != TextScreen.from_bytes(base, None)  # the cursor was hidden
    recoloured = bytearray(base)
    recoloured[(80 + 1) * 2 + 1] = 0x17  # only an attribute changed
    assert a != TextScreen.from_bytes(bytes(recoloured), (1, 5))


def test_a_screen_is_exactly_4000_bytes() -> None:
    assert TEXT_BYTES == 4000
    with pytest.raises(ValueError, match="4000"):
        TextScreen.from_bytes(bytes(3998))


def test_the_blank_screen_is_grey_spaces() -> None:
    blank = TextScreen.blank()
    assert blank.raw == b"\x20\x07" * 2000 and blank.text() == [""] * 25 and blank.cursor == (0, 0)


# --- the CRT controller ------------------------------------------------------


def test_cursor_location_registers_move_the_cursor() -> None:
    bus, crtc = vga_bus()
    assert crtc.cursor_position() == (0, 0)
    position = 4 * 80 + 2
    set_crtc(bus, 0x0F, position & 0xFF)
    set_crtc(bus, 0x0E, position >> 8)
    assert crtc.cursor_address == position
    assert crtc.cursor_position() == (4, 2)
    bus.write(CRTC_INDEX, 1, 0x0E)
    assert bus.read(CRTC_DATA, 1) == position >> 8
    assert bus.read(CRTC_INDEX, 1) == 0x0E


def test_a_word_write_sets_index_and_data_at_once() -> None:
    bus, crtc = vga_bus()
    high, low = divmod(24 * 80 + 79, 256)
    bus.write(CRTC_INDEX, 2, high << 8 | 0x0E)  # outw: AL = index to 0x3D4, AH = value to 0x3D5
    bus.write(CRTC_INDEX, 2, low << 8 | 0x0F)
    assert crtc.cursor_position() == (24, 79)
    assert bus.read(CRTC_INDEX, 2) == low << 8 | 0x0F


def test_every_crtc_register_reads_back() -> None:
    bus, _ = vga_bus()
    set_crtc(bus, 0x11, 0x0E)  # clear the protect bit first: it guards registers 0-7
    for index in range(0x19):
        if index != 0x11:
            set_crtc(bus, index, (index * 7 + 3) & 0xFF)
    for index in range(0x19):
        bus.write(CRTC_INDEX, 1, index)
        expected = 0x0E if index == 0x11 else (index * 7 + 3) & 0xFF
        assert bus.read(CRTC_DATA, 1) == expected, f"CRTC register {index:#x}"


def test_the_protect_bit_keeps_the_timing_registers() -> None:
    bus, crtc = vga_bus()
    assert crtc.crtc[0x11] & 0x80  # mode 3 leaves it set
    set_crtc(bus, 0x00, 0x12)
    set_crtc(bus, 0x07, 0x00)  # only the line compare bit 8 (bit 4) is writable
    assert crtc.crtc[0x00] == 0x5F and crtc.crtc[0x07] == 0x1F & ~0x10
    set_crtc(bus, 0x0A, 0x20)  # registers above 7 are not protected
    assert crtc.crtc[0x0A] == 0x20


def test_cursor_disable_bit_and_start_address() -> None:
    bus, crtc = vga_bus()
    set_crtc(bus, 0x0A, 0x20 | 0x0D)
    assert crtc.cursor_position() is None
    set_crtc(bus, 0x0A, 0x0D)
    set_crtc(bus, 0x0F, 90)
    set_crtc(bus, 0x0D, 80)  # hardware scroll by one row
    assert crtc.start_address == 80
    assert crtc.cursor_position() == (0, 10)
    assert crtc.visible_address() == TEXT_BASE + 160
    set_crtc(bus, 0x0D, 0)
    set_crtc(bus, 0x0C, 0x3F)  # beyond the 32 KiB window: the plain buffer is shown
    assert crtc.visible_address() == TEXT_BASE
    assert crtc.cursor_position() is None  # the cursor is not on the visible part


def test_read_screen_reads_the_visible_window() -> None:
    bus, crtc = vga_bus()
    set_crtc(bus, 0x0D, 80)
    set_crtc(bus, 0x0F, 81)
    requests: list[tuple[int, int]] = []

    def read(address: int, length: int) -> bytes:
        requests.append((address, length))
        return screen_bytes(text_at(0, 0, b"top"))

    screen = read_screen(read, crtc)
    assert requests == [(TEXT_BASE + 160, 4000)]
    assert screen.text()[0] == "top" and screen.cursor == (0, 1)


# --- the other ports -----------------------------------------------------------


def test_input_status_toggles_vertical_retrace_so_wait_loops_end() -> None:
    bus, _ = vga_bus()
    values = [bus.read(STATUS1, 1) for _ in range(4)]
    assert [v & VRETRACE for v in values] == [VRETRACE, 0, VRETRACE, 0]
    # The classic "wait for the start of a retrace" loop, bounded.
    for _ in range(10):
        if not bus.read(STATUS1, 1) & VRETRACE:
            break
    else:
        pytest.fail("the retrace never ended")
    for _ in range(10):
        if bus.read(STATUS1, 1) & VRETRACE:
            break
    else:
        pytest.fail("the retrace never began")


def test_reading_input_status_resets_the_attribute_flip_flop() -> None:
    bus, crtc = vga_bus()
    bus.write(ATTR, 1, 0x20 | 0x10)  # index 0x10 (mode control), PAS kept
    bus.write(ATTR, 1, 0x0C)  # data
    assert bus.read(ATTR_READ, 1) == 0x0C and bus.read(ATTR, 1) == 0x30
    bus.write(ATTR, 1, 0x20 | 0x12)  # an index, then the driver loses track ...
    bus.read(STATUS1, 1)  # ... and resets the flip-flop
    bus.write(ATTR, 1, 0x20 | 0x11)  # so this is an index again, not data for 0x12
    assert crtc.attr[0x12] == 0x0F and crtc.attr_index & 0x1F == 0x11
    bus.write(ATTR, 1, 0x05)
    assert crtc.attr[0x11] == 0x05


def test_dac_palette_reads_back_what_was_written() -> None:
    bus, _ = vga_bus()
    bus.write(0x3C8, 1, 5)
    for value in (0x3F, 0x10, 0xFF):  # the DAC is 6 bits wide
        bus.write(0x3C9, 1, value)
    assert bus.read(0x3C8, 1) == 6  # moved on to the next entry
    bus.write(0x3C7, 1, 5)
    assert bus.read(0x3C7, 1) == 0x03  # DAC state: in read mode
    assert [bus.read(0x3C9, 1) for _ in range(3)] == [0x3F, 0x10, 0x3F]


def test_misc_sequencer_and_graphics_registers_remember() -> None:
    bus, _ = vga_bus()
    assert bus.read(0x3CC, 1) == 0x67  # mode 3: colour ports at 0x3Dx
    bus.write(0x3C2, 1, 0x63)
    assert bus.read(0x3CC, 1) == 0x63
    bus.write(0x3C4, 2, 0x0301)  # sequencer index 1 (clocking mode) = 3
    bus.write(0x3C4, 1, 1)
    assert bus.read(0x3C5, 1) == 0x03
    bus.write(0x3CE, 1, 6)
    assert bus.read(0x3CF, 1) == 0x0E  # graphics misc: text at 0xB8000
    bus.write(0x3DA, 1, 0x01)  # feature control is written at 0x3DA ...
    assert bus.read(0x3CA, 1) == 0x01  # ... and read at 0x3CA
