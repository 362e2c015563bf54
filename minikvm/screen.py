"""Showing a guest's VGA text screen: on a terminal (ANSI escapes) and as a PNG picture.

The front-end half of devices/vga.py: the device decodes the text buffer into
a `TextScreen`, this module draws one. Colours are the 16 of the VGA text
palette; the blink bit (attribute bit 7) is ignored, so backgrounds are 0-7.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .devices.vga import COLUMNS, ROWS, TextScreen

# VGA colour order is (blue, green, red) in bits 0-2; ANSI's is (red, green,
# blue): the same three bits reversed.
_VGA_TO_ANSI = (0, 4, 2, 6, 1, 5, 3, 7)

# The RGB the BIOS programs for the 16 text colours (6-bit DAC values x 4;
# colour 6 is brown, not dark yellow).
VGA_PALETTE = (
    (0x00, 0x00, 0x00), (0x00, 0x00, 0xAA), (0x00, 0xAA, 0x00), (0x00, 0xAA, 0xAA),
    (0xAA, 0x00, 0x00), (0xAA, 0x00, 0xAA), (0xAA, 0x55, 0x00), (0xAA, 0xAA, 0xAA),
    (0x55, 0x55, 0x55), (0x55, 0x55, 0xFF), (0x55, 0xFF, 0x55), (0x55, 0xFF, 0xFF),
    (0xFF, 0x55, 0x55), (0xFF, 0x55, 0xFF), (0xFF, 0xFF, 0x55), (0xFF, 0xFF, 0xFF),
)

CELL_WIDTH = 8
CELL_HEIGHT = 16
PNG_SIZE = (COLUMNS * CELL_WIDTH, ROWS * CELL_HEIGHT)  # 640x400, the VGA's own text resolution


# --- terminal ----------------------------------------------------------------


def sgr(attr: int) -> str:
    """The SGR escape for a VGA attribute: bright foregrounds as 90-97, backgrounds 40-47."""
    fg, bg = attr & 0x0F, (attr >> 4) & 0x07
    fg_code = (90 if fg & 8 else 30) + _VGA_TO_ANSI[fg & 7]
    return f"\x1b[0;{fg_code};{40 + _VGA_TO_ANSI[bg]}m"


def render_ansi(screen: TextScreen) -> str:
    """The whole screen for a terminal, to be written in one go over the previous one.

    Each row is placed with an absolute cursor move, so a terminal narrower
    or wider than 80 columns does not shift the rows below. The colours are
    reset at the end and the terminal cursor is left where the VGA cursor is
    (hidden when the VGA's is).
    """
    out = ["\x1b[?25l\x1b[H"]  # hide the cursor while drawing: no flicker across the screen
    for number, row in enumerate(screen.rows, start=1):
        out.append(f"\x1b[{number};1H")
        current = -1
        for cell in row:
            if cell.attr & 0x7F != current:
                current = cell.attr & 0x7F
                out.append(sgr(current))
            out.append(cell.glyph)
    out.append("\x1b[0m")
    if screen.cursor is None:
        out.append(f"\x1b[{ROWS};1H")
    else:
        row, column = screen.cursor
        out.append(f"\x1b[{row + 1};{column + 1}H\x1b[?25h")
    return "".join(out)


# --- picture -------------------------------------------------------------------


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's built-in bitmap font: 6x11 cells, Latin-1. It sits in the 8x16
    # cell the way the VGA's 8x16 glyphs do, with room for the cursor below.
    # (Pillow >= 10.1 returns a proportional TrueType font from load_default.)
    load = getattr(ImageFont, "load_default_imagefont", None)
    return load() if load is not None else ImageFont.load_default()


_WEIGHTS = {"LIGHT": 1, "SINGLE": 1, "DOUBLE": 2}
_ARMS = {"UP": ("up",), "DOWN": ("down",), "LEFT": ("left",), "RIGHT": ("right",),
         "VERTICAL": ("up", "down"), "HORIZONTAL": ("left", "right")}


@lru_cache(maxsize=256)
def box_arms(glyph: str) -> dict[str, int] | None:
    """For a box-drawing character, the weight (1 single, 2 double) of each arm from the centre.

    Read off the Unicode name, e.g. "BOX DRAWINGS DOWN SINGLE AND LEFT
    DOUBLE" or "BOX DRAWINGS DOUBLE VERTICAL AND LEFT": a leading weight
    applies to every arm, a trailing one to the arm before it.
    """
    name = unicodedata.name(glyph, "")
    if not name.startswith("BOX DRAWINGS "):
        return None
    words = name.split()[2:]
    default = _WEIGHTS.get(words[0])
    if default is not None:
        words = words[1:]
    arms: dict[str, int] = {}
    for part in " ".join(words).split(" AND "):
        direction, *weight = part.split()
        if direction not in _ARMS:
            return None  # heavy, dashed and arc variants: not in code page 437
        for arm in _ARMS[direction]:
            arms[arm] = _WEIGHTS[weight[0]] if weight else default or 1
    return arms


_PERPENDICULAR = {"up": ("left", "right"), "down": ("left", "right"), "left": ("up", "down"),
                  "right": ("up", "down")}
_TOWARDS = {"up": -1, "left": -1, "down": 1, "right": 1}


def _arm_end(arms: dict[str, int], arm: str, shift: int, centre: int) -> int:
    """Where a line of `arm` (at `shift` from the centre line) stops as it comes in from the edge.

    A line meets the crossing arm on its own side at that arm's nearest line
    (the inner corner of a double box); with nothing crossing on its side it
    runs on to the far line of what crosses on the other side (the outer
    corner), so straight runs stay unbroken and corners close.
    """
    before, after = (arms.get(side, 0) for side in _PERPENDICULAR[arm])
    if shift < 0:
        mine, other = before, after
    elif shift > 0:
        mine, other = after, before
    else:  # a single line crosses only when something crosses on both sides
        mine, other = (max(before, after) if before and after else 0), max(before, after)
    towards = _TOWARDS[arm]
    if mine:
        return centre + towards * (1 if mine == 2 else 0)
    return centre - towards * (1 if other == 2 else 0)


def _draw_box(draw: ImageDraw.ImageDraw, x: int, y: int, arms: dict[str, int], colour: tuple[int, ...]) -> None:
    cx, cy = x + CELL_WIDTH // 2 - 1, y + CELL_HEIGHT // 2 - 1
    right, bottom = x + CELL_WIDTH - 1, y + CELL_HEIGHT - 1
    for arm, weight in arms.items():
        # A double line is two lines either side of where the single line runs.
        for shift in ((0,) if weight == 1 else (-1, 1)):
            if arm in ("up", "down"):
                stop = _arm_end(arms, arm, shift, cy)
                draw.line([(cx + shift, y if arm == "up" else stop), (cx + shift, stop if arm == "up" else bottom)],
                          fill=colour)
            else:
                stop = _arm_end(arms, arm, shift, cx)
                draw.line([(x if arm == "left" else stop, cy + shift), (stop if arm == "left" else right, cy + shift)],
                          fill=colour)


# Block elements: (x0, y0, x1, y1) as fractions of the cell.
_BLOCKS = {"█": (0, 0, 1, 1), "▄": (0, 0.5, 1, 1), "▀": (0, 0, 1, 0.5), "▌": (0, 0, 0.5, 1),
           "▐": (0.5, 0, 1, 1), "■": (0.25, 0.375, 0.75, 0.6875)}


def _shade_lit(glyph: str, i: int, j: int) -> bool:
    """Whether pixel (i, j) of a shade character is lit: a quarter, half, three quarters."""
    quarter = i % 4 == (j % 2) * 2  # staggered row to row, so it reads as a tone, not stripes
    return {"░": quarter, "▒": (i + j) % 2 == 0, "▓": not quarter}[glyph]


def _draw_glyph(draw: ImageDraw.ImageDraw, x: int, y: int, glyph: str, colour: tuple[int, ...]) -> None:
    if glyph == " ":
        return
    if glyph in _BLOCKS:
        x0, y0, x1, y1 = _BLOCKS[glyph]
        draw.rectangle([x + round(x0 * CELL_WIDTH), y + round(y0 * CELL_HEIGHT),
                        x + round(x1 * CELL_WIDTH) - 1, y + round(y1 * CELL_HEIGHT) - 1], fill=colour)
        return
    if glyph in "░▒▓":
        lit = [(x + i, y + j) for j in range(CELL_HEIGHT) for i in range(CELL_WIDTH) if _shade_lit(glyph, i, j)]
        draw.point(lit, fill=colour)
        return
    arms = box_arms(glyph)
    if arms is not None:
        _draw_box(draw, x, y, arms, colour)
        return
    try:
        glyph.encode("latin-1")
    except UnicodeEncodeError:
        # A picture the bitmap font lacks (smileys, arrows, Greek): an outline
        # box, so the picture shows there is something in the cell.
        draw.rectangle([x + 1, y + 4, x + CELL_WIDTH - 2, y + 12], outline=colour)
        return
    draw.text((x + 1, y + 2), glyph, font=_font(), fill=colour)


def render_image(screen: TextScreen) -> Image.Image:
    """The screen as a 640x400 RGB picture: 8x16 cells, the VGA palette, the cursor as an underline."""
    image = Image.new("RGB", PNG_SIZE, VGA_PALETTE[0])
    draw = ImageDraw.Draw(image)
    for r, row in enumerate(screen.rows):
        for c, cell in enumerate(row):
            x, y = c * CELL_WIDTH, r * CELL_HEIGHT
            if cell.background:
                draw.rectangle([x, y, x + CELL_WIDTH - 1, y + CELL_HEIGHT - 1], fill=VGA_PALETTE[cell.background])
            _draw_glyph(draw, x, y, cell.glyph, VGA_PALETTE[cell.foreground])
    if screen.cursor is not None:
        row, column = screen.cursor
        x, y = column * CELL_WIDTH, row * CELL_HEIGHT
        colour = VGA_PALETTE[screen.cell(row, column).foreground]
        # Mode 3's cursor covers scan lines 13-14 of the 16 (CRTC registers 0x0A/0x0B).
        draw.rectangle([x, y + 13, x + CELL_WIDTH - 1, y + 14], fill=colour)
    return image


def save_png(screen: TextScreen, path: Path) -> None:
    render_image(screen).save(path, format="PNG")
