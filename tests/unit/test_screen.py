"""Drawing a text screen: ANSI escapes for a terminal, and a PNG picture."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from minikvm.devices.vga import TextScreen, blank_text_buffer
from minikvm.screen import PNG_SIZE, VGA_PALETTE, box_arms, render_ansi, save_png, sgr

ROW_MOVE = re.compile(r"\x1b\[(\d+);1H")
SGR = re.compile(r"\x1b\[[0-9;]*m")


def make_screen(cells: dict[tuple[int, int], tuple[bytes, int]], cursor: tuple[int, int] | None = (0, 0)) -> TextScreen:
    """A cleared screen with strings written at (row, column) in an attribute."""
    raw = bytearray(blank_text_buffer())
    for (row, column), (text, attr) in cells.items():
        for i, char in enumerate(text):
            offset = (row * 80 + column + i) * 2
            raw[offset:offset + 2] = bytes([char, attr])
    return TextScreen.from_bytes(bytes(raw), cursor)


def test_sgr_maps_vga_colours_to_ansi() -> None:
    assert sgr(0x07) == "\x1b[0;37;40m"  # light grey on black
    assert sgr(0x1F) == "\x1b[0;97;44m"  # white on blue: bright fg 90+, VGA blue is ANSI 4
    assert sgr(0x4E) == "\x1b[0;93;41m"  # yellow (bright brown) on red
    assert sgr(0x06) == "\x1b[0;33;40m"  # brown: VGA 6 (red|green) is ANSI 3
    assert sgr(0x31) == "\x1b[0;34;46m"  # blue on cyan
    assert sgr(0x9C) == sgr(0x1C) == "\x1b[0;91;44m"  # the blink bit is ignored


def test_ansi_output_draws_every_row_with_colours_and_places_the_cursor() -> None:
    screen = make_screen({(0, 0): (b"Title", 0x1F), (2, 4): (b"Hello", 0x0A), (24, 75): (b"end!!", 0x4E)},
                         cursor=(2, 9))
    out = render_ansi(screen)
    assert out.startswith("\x1b[?25l\x1b[H")
    assert "\x1b[0;97;44mTitle" in out
    assert "\x1b[0;92;40mHello" in out
    assert "\x1b[0;93;41mend!!" in out
    # Only the blink bit differs between these two: one colour change, not two.
    blink = render_ansi(make_screen({(3, 0): (b"a", 0x1F), (3, 1): (b"b", 0x9F)}))
    assert "\x1b[0;97;44mab" in blink
    # Reset, then the terminal cursor at the VGA cursor (1-based), shown.
    assert out.endswith("\x1b[0m\x1b[3;10H\x1b[?25h")


def test_ansi_output_is_the_screen_text_row_by_row() -> None:
    screen = make_screen({(0, 0): (b"\xc9\xcd\xbb", 0x07), (1, 10): (b"caf\x82", 0x1E), (24, 0): (b"x" * 80, 0x70)})
    drawing, _, cursor_part = render_ansi(screen).rpartition("\x1b[0m")  # the reset ends the drawing
    assert cursor_part == "\x1b[1;1H\x1b[?25h"
    rows = ROW_MOVE.split(drawing)[1:]  # [number, text, number, text, ...]
    numbers, texts = rows[0::2], [SGR.sub("", t) for t in rows[1::2]]
    assert numbers == [str(n) for n in range(1, 26)]
    assert all(len(t) == 80 for t in texts)
    assert [t.rstrip(" ") for t in texts] == screen.text()
    assert texts[0].startswith("╔═╗") and texts[1][10:14] == "café"


def test_a_hidden_cursor_stays_hidden() -> None:
    out = render_ansi(make_screen({}, cursor=None))
    assert "\x1b[?25h" not in out and out.endswith("\x1b[0m\x1b[25;1H")


def pixel_colours(image: Image.Image, row: int, column: int) -> set[tuple[int, int, int]]:
    cell = image.crop((column * 8, row * 16, column * 8 + 8, row * 16 + 16))
    return {colour for _, colour in cell.getcolors(8 * 16)}


def test_png_has_the_vga_size_colours_and_text(tmp_path: Path) -> None:
    screen = make_screen({(0, 0): (b"H", 0x1F), (5, 40): (b"\xdb", 0x0C)}, cursor=(10, 3))
    path = tmp_path / "screen.png"
    save_png(screen, path)
    image = Image.open(path).convert("RGB")
    assert image.size == PNG_SIZE == (640, 400)
    blue, white, black = VGA_PALETTE[1], VGA_PALETTE[15], VGA_PALETTE[0]
    # The "H": white glyph pixels on a blue cell, nothing else.
    assert pixel_colours(image, 0, 0) == {blue, white}
    assert image.getpixel((0, 0)) == blue
    # The full block fills its cell with the foreground (light red).
    assert pixel_colours(image, 5, 40) == {VGA_PALETTE[12]}
    # An empty cell is plain black; the cursor's cell has a grey underline.
    assert pixel_colours(image, 12, 12) == {black}
    assert pixel_colours(image, 10, 3) == {black, VGA_PALETTE[7]}
    assert image.getpixel((3 * 8 + 4, 10 * 16 + 14)) == VGA_PALETTE[7]


def test_png_draws_box_pictures_the_font_lacks(tmp_path: Path) -> None:
    screen = make_screen({(1, 1): (b"\xc9\xcd\xbb\x01", 0x0F)}, cursor=None)
    save_png(screen, tmp_path / "box.png")
    image = Image.open(tmp_path / "box.png").convert("RGB")
    for column in (1, 2, 3, 4):
        assert VGA_PALETTE[15] in pixel_colours(image, 1, column), f"column {column} is empty"
    # "═" is two lines across the whole cell, either side of the middle, so
    # neighbouring cells join up into a frame.
    x, y, white = 2 * 8, 1 * 16, VGA_PALETTE[15]
    assert [image.getpixel((x + i, y + 6)) == white for i in range(8)] == [True] * 8
    assert [image.getpixel((x + i, y + 8)) == white for i in range(8)] == [True] * 8
    assert image.getpixel((x, y + 7)) != white
    # "╔": its outer corner is closed, nothing sticks out above or left of it.
    x = 1 * 8
    assert image.getpixel((x + 2, y + 6)) == white and image.getpixel((x + 2, y + 15)) == white
    assert image.getpixel((x + 2, y + 5)) != white and image.getpixel((x + 1, y + 6)) != white
    # ... and its inner lines meet at the inner corner without crossing into it.
    assert image.getpixel((x + 4, y + 8)) == white
    assert image.getpixel((x + 4, y + 7)) != white and image.getpixel((x + 3, y + 8)) != white


def test_box_arms_read_from_the_character_names() -> None:
    assert box_arms("╔") == {"down": 2, "right": 2}
    assert box_arms("╡") == {"up": 1, "down": 1, "left": 2}
    assert box_arms("╥") == {"down": 2, "left": 1, "right": 1}
    assert box_arms("┼") == {"up": 1, "down": 1, "left": 1, "right": 1}
    assert box_arms("A") is None
