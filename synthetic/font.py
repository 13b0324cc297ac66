"""A 5x7 bitmap font shipped in code, so burned-in text needs no font files or downloads.

Scanners burn patient names into the background of the image with a plain raster font; a blocky
5x7 font scaled to 20-60 px reproduces what the pixel scrubber has to find (thin bright strokes on
a dark background), including the Norwegian letters Æ Ø Å.
"""

from __future__ import annotations

import numpy as np

_GLYPHS: dict[str, str] = {
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    "Æ": "01111 10100 10100 11111 10100 10100 10111",
    "Ø": "01111 10011 10101 10101 10101 11001 11110",
    "Å": "00100 01010 01110 10001 11111 10001 10001",
    "Ä": "01010 00000 01110 10001 11111 10001 10001",
    "Ö": "01010 00000 01110 10001 10001 10001 01110",
    "Ü": "01010 00000 10001 10001 10001 10001 01110",
    "É": "00010 00100 11111 10000 11110 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    "/": "00000 00001 00010 00100 01000 10000 00000",
    "^": "00100 01010 10001 00000 00000 00000 00000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "'": "00100 00100 01000 00000 00000 00000 00000",
    "#": "01010 01010 11111 01010 11111 01010 01010",
    "?": "01110 10001 00001 00010 00100 00000 00100",
}
_UNKNOWN = "11111 10001 10001 10001 10001 10001 11111"
GLYPH_ROWS = 7
GLYPH_COLS = 5


def _glyph(ch: str) -> np.ndarray:
    spec = _GLYPHS.get(ch.upper(), _UNKNOWN)
    return np.array([[c == "1" for c in row] for row in spec.split()], dtype=bool)


def render_text(text: str, height: int) -> np.ndarray:
    """A boolean ink mask for one line of ``text`` whose glyphs are ``height`` pixels high.

    Glyphs are scaled by an integer factor (nearest neighbour, as scanner overlays are) with one
    glyph-pixel of spacing between characters.
    """
    scale = max(1, round(height / GLYPH_ROWS))
    cells = [_glyph(ch) for ch in text]
    if not cells:
        return np.zeros((GLYPH_ROWS * scale, 0), dtype=bool)
    gap = np.zeros((GLYPH_ROWS, 1), dtype=bool)
    row = np.concatenate([part for g in cells for part in (g, gap)][:-1], axis=1)
    return np.kron(row, np.ones((scale, scale), dtype=bool))


def render_lines(lines: list[str], height: int) -> np.ndarray:
    """Several lines, left-aligned, with half a line of leading between them."""
    masks = [render_text(line, height) for line in lines]
    if not masks:
        return np.zeros((0, 0), dtype=bool)
    width = max(m.shape[1] for m in masks)
    lead = max(1, masks[0].shape[0] // 2)
    total = sum(m.shape[0] for m in masks) + lead * (len(masks) - 1)
    out = np.zeros((total, width), dtype=bool)
    r = 0
    for m in masks:
        out[r : r + m.shape[0], : m.shape[1]] = m
        r += m.shape[0] + lead
    return out
