"""Finding burned-in text on one frame, and blanking it (the pixel stage's detection half).

See pixels.py for why it works this way. In short: a block grid of per-block maximum ink, read
from a strided view of the frame; 8-connected components of the blocks above the background
level; big components are anatomy, small ones surrounded by background are text candidates;
each candidate gets a full-resolution ink box that never covers an anatomy block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from pydicom.dataset import Dataset

from service.core.errors import PixelRefused
from workers.deid.outcome import Box
from workers.deid.policy_schema import PixelOptions
from workers.runs import label_runs

_MONO = ("MONOCHROME1", "MONOCHROME2")
_COLOR_OK = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")


@dataclass(frozen=True)
class Layout:
    """The pixel description the search needs, read once from the header (``layout_of``)."""

    frames: int
    rows: int
    cols: int
    samples: int
    planar: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    invert: bool | None = None  # per frame, from the background (see polarity)

    @property
    def inverted(self) -> bool:
        """True when the background is bright (ink = darker than it)."""
        if self.invert is not None:
            return self.invert
        return self.photometric == "MONOCHROME1"

    @property
    def max_value(self) -> int:
        return (1 << (self.bits_stored - 1)) - 1 if self.signed else (1 << self.bits_stored) - 1

    @property
    def min_value(self) -> int:
        return -(1 << (self.bits_stored - 1)) if self.signed else 0

    @property
    def nbytes(self) -> int:
        return self.frames * self.rows * self.cols * self.samples * self.bits_allocated // 8


def layout_of(header: Dataset) -> Layout:
    """The header's pixel description; refused when incomplete or of a kind not searched."""
    try:
        layout = Layout(
            frames=int(header.get("NumberOfFrames", 1) or 1),
            rows=int(header.Rows),
            cols=int(header.Columns),
            samples=int(header.get("SamplesPerPixel", 1) or 1),
            planar=int(header.get("PlanarConfiguration", 0) or 0),
            bits_allocated=int(header.BitsAllocated),
            bits_stored=int(header.get("BitsStored", header.BitsAllocated) or 0),
            signed=int(header.get("PixelRepresentation", 0) or 0) == 1,
            photometric=str(header.get("PhotometricInterpretation", "")).strip(),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise PixelRefused("image pixel description is incomplete", code="pixel-attrs") from exc
    if layout.rows <= 0 or layout.cols <= 0 or layout.frames <= 0:
        raise PixelRefused("image has no rows, columns or frames", code="pixel-attrs")
    if layout.bits_allocated not in (8, 16, 32) or not 0 < layout.bits_stored <= 32:
        raise PixelRefused("unsupported bits allocated for the pixel check", code="pixel-attrs")
    mono = layout.samples == 1 and layout.photometric in _MONO
    color = layout.samples == 3 and layout.photometric in _COLOR_OK
    if not (mono or color):
        raise PixelRefused("unsupported photometric interpretation for the pixel check",
                           code="pixel-photometric")
    return layout


def ink_level(a: np.ndarray, layout: Layout, channel_axis: int | None) -> np.ndarray:
    """Signal above a black background as int32 (MONOCHROME1 flipped, colour = brightest)."""
    if channel_axis is not None:
        a = a.max(axis=channel_axis)
    v = a.astype(np.int32)
    return (layout.max_value - v) if layout.inverted else (v - layout.min_value)


def _block_map(frame: np.ndarray, layout: Layout, block: int, stride: int) -> np.ndarray:
    """Per-block maximum ink, reading every ``stride``-th row of the frame in full.

    Built from element-wise maxima of strided slices: numpy vectorises those, while
    ``reduceat`` or a short inner-axis reduction runs ~10x slower on a 4096 x 3328 image.
    """
    s = frame[::stride]
    if s.ndim == 3:  # colour, channels last
        s = s.max(axis=2) if not layout.inverted else s.min(axis=2)
    ufunc = np.minimum if layout.inverted else np.maximum
    grid = _strided_reduce(_strided_reduce(s, block // stride, 0, ufunc), block, 1, ufunc)
    g = grid.astype(np.int32)
    return (layout.max_value - g) if layout.inverted else (g - layout.min_value)


def _strided_reduce(a: np.ndarray, k: int, axis: int, ufunc: np.ufunc) -> np.ndarray:
    """Reduce groups of ``k`` consecutive entries along ``axis`` (the last group may be short)."""
    if k == 1:
        return a
    out = np.array(a[::k] if axis == 0 else a[:, ::k])
    for j in range(1, k):
        part = a[j::k] if axis == 0 else a[:, j::k]
        n = part.shape[axis]
        if axis == 0:
            ufunc(out[:n], part, out=out[:n])
        else:
            ufunc(out[:, :n], part, out=out[:, :n])
    return out


def _components(occ: np.ndarray) -> tuple[list[tuple[int, int, int, int]], list[list[int]]]:
    """8-connected components of a small boolean grid.

    Returns the runs as (row, col0, col1, label) and per component [label, area, r0, c0, r1, c1].
    Run-length union-find (``workers.runs``): a mammogram's grid has a few hundred runs, so
    this costs well under a millisecond without scipy.
    """
    rows, starts, ends, labels = label_runs(occ)
    runs = []
    info: dict[int, list[int]] = {}
    for k, root in enumerate(labels):
        r, c0, c1 = rows[k], starts[k], ends[k]
        runs.append((r, c0, c1, root))
        e = info.get(root)
        if e is None:
            info[root] = [root, c1 - c0, r, c0, r + 1, c1]
        else:
            e[1] += c1 - c0
            e[3], e[4], e[5] = min(e[3], c0), r + 1, max(e[5], c1)
    return runs, list(info.values())


@dataclass
class Candidates:
    """Non-anatomy components on a block grid, and the anatomy blocks never to touch."""

    block: int
    anatomy: np.ndarray
    boxes: list[tuple[int, int, int, int]]  # in blocks, half-open
    cut: int  # ink level separating background from anything else
    peak: int  # ink level a text candidate must reach somewhere


def find_candidates(grid: np.ndarray, block: int, layout: Layout, options: PixelOptions,
                margin_fraction: float | None = None) -> Candidates:
    flat = grid.ravel()
    k_lo, k_hi = int(0.05 * (flat.size - 1)), int(0.99 * (flat.size - 1))
    part = np.partition(flat, (k_lo, k_hi))
    bg, hi = int(part[k_lo]), int(part[k_hi])
    full_range = layout.max_value - layout.min_value
    frac = options.background_margin if margin_fraction is None else margin_fraction
    cut = bg + max(2, int(frac * max(hi - bg, 0.1 * full_range)))
    occ = grid > cut
    peak = bg + int(options.text_contrast * (hi - bg))
    empty = Candidates(block, np.zeros(grid.shape, dtype=bool), [], cut, peak)
    if not occ.any():
        return empty
    runs, comps = _components(occ)
    largest = max(c[1] for c in comps)
    big = max(options.anatomy_fraction * largest, 0.02 * grid.size)
    boxes = [(c[2], c[3], c[4], c[5]) for c in comps if c[1] < big]
    if not boxes:
        return empty
    anatomy_labels = {c[0] for c in comps if c[1] >= big}
    anatomy = np.zeros(grid.shape, dtype=bool)
    for r, c0, c1, label in runs:
        if label in anatomy_labels:
            anatomy[r, c0:c1] = True
    return Candidates(block, anatomy, boxes, cut, peak)


def _find_text(frame: np.ndarray, layout: Layout, options: PixelOptions,
               cands: Candidates, frame_no: int) -> list[Box]:
    """Full-resolution ink boxes for each candidate, never overlapping anatomy blocks."""
    b, rows, cols = cands.block, layout.rows, layout.cols
    out: list[Box] = []
    for br0, bc0, br1, bc1 in cands.boxes:
        r0, c0 = max(0, (br0 - 1) * b), max(0, (bc0 - 1) * b)
        r1, c1 = min(rows, (br1 + 1) * b), min(cols, (bc1 + 1) * b)
        sub = frame[r0:r1, c0:c1]
        level = ink_level(sub, layout, 2 if sub.ndim == 3 else None)
        level[_anatomy_pixels(cands, r0, c0, r1, c1)] = 0
        ink = level > cands.cut
        if int(ink.sum()) < options.min_ink_pixels or int(level.max()) < cands.peak:
            continue
        rr = np.nonzero(ink.any(axis=1))[0]
        cc = np.nonzero(ink.any(axis=0))[0]
        m = options.margin
        out.append(Box(
            max(0, r0 + int(rr[0]) - m), max(0, c0 + int(cc[0]) - m),
            min(rows, r0 + int(rr[-1]) + 1 + m), min(cols, c0 + int(cc[-1]) + 1 + m),
            frame_no,
        ))
    return out


def _anatomy_pixels(cands: Candidates, r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
    b = cands.block
    ri = np.minimum(np.arange(r0, r1) // b, cands.anatomy.shape[0] - 1)
    ci = np.minimum(np.arange(c0, c1) // b, cands.anatomy.shape[1] - 1)
    return cands.anatomy[np.ix_(ri, ci)]


def _geometry(rows: int) -> tuple[int, int]:
    """(block, stride): ~256 block rows, reading ~512 rows of the frame."""
    stride = max(1, rows // 512)
    block = max(4, rows // 256)
    block = -(-block // stride) * stride
    return block, stride


def _frame_candidates(frame: np.ndarray, layout: Layout,
                      options: PixelOptions) -> Candidates:
    block, stride = _geometry(layout.rows)
    return find_candidates(_block_map(frame, layout, block, stride), block, layout, options)


def blank_boxes(frame: np.ndarray, boxes: list[Box], cands: Candidates, value: int) -> None:
    for box in boxes:
        keep = _anatomy_pixels(cands, box.row0, box.col0, box.row1, box.col1)
        region = frame[box.row0 : box.row1, box.col0 : box.col1]
        if region.ndim == 3:
            region[~keep, :] = value
        else:
            region[~keep] = value


def polarity(frame: np.ndarray, layout: Layout) -> Layout:
    """The layout with the background's polarity taken from the image border.

    MONOCHROME1 normally has a bright background and MONOCHROME2 a dark one, but raw ("for
    processing") images and mislabelled ones do not follow that; looking for bright ink on what
    is really a bright background would call the breast "background". The photometric default
    is overridden only when the border median sits within 10% of the range from the other end.
    """
    stride = max(1, frame.shape[0] // 512)
    edges = [frame[0], frame[-1], frame[::stride, 0], frame[::stride, -1]]
    if frame.ndim == 3:
        edges = [e.max(axis=-1) for e in edges]
    border = np.concatenate([np.asarray(e).ravel() for e in edges])
    sample = frame[:: stride * 4]
    lo, hi = int(sample.min()), int(sample.max())
    if hi - lo <= 0:
        return layout
    m = float(np.median(border))
    if m - lo < 0.1 * (hi - lo):
        return replace(layout, invert=False)
    if hi - m < 0.1 * (hi - lo):
        return replace(layout, invert=True)
    return layout


def _fill(layout: Layout, options: PixelOptions) -> int:
    if options.fill is not None:
        return int(np.clip(options.fill, layout.min_value, layout.max_value))
    return layout.max_value if layout.inverted else layout.min_value


# (frame number, text boxes, the frame's candidates, fill value) for each frame with text
FrameText = tuple[int, list[Box], Candidates, int]


def scan_frames(frames: np.ndarray, layout: Layout, options: PixelOptions) -> list[FrameText]:
    """Every frame with text, each with its own polarity (see ``polarity``) and fill value."""
    found: list[FrameText] = []
    for f in range(layout.frames):
        fl = polarity(frames[f], layout)
        cands = _frame_candidates(frames[f], fl, options)
        if cands.boxes:
            boxes = _find_text(frames[f], fl, options, cands, f)
            if boxes:
                found.append((f, boxes, cands, _fill(fl, options)))
    return found
