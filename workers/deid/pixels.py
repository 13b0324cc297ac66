"""Burned-in text in pixels: find it in the background, blank it, leave the anatomy untouched.

Why this works the way it does:

- ``BurnedInAnnotation`` is not trusted: units write "NO" and burn the name in anyway. Every image
  is looked at.
- Text on mammograms (and on most projection images and ultrasound) sits in the background, away
  from the anatomy. So the search is: find what is *not background*, group it into connected
  components on a coarse block grid, call the big components anatomy and every small component
  surrounded by background a text candidate. Only candidates are looked at in full resolution, and
  only pixels outside the anatomy blocks are ever blanked (the breast stays byte-identical).
- It must cost almost nothing when there is no text, because the engine otherwise copies the pixel
  bytes straight from the file. The block grid is built from a numpy view of the bytes (no copy)
  reading every ``rows // 512``-th row in full (every 8th row of a 4096-row mammogram, ~3.4 MB
  touched, ~2 ms); any glyph whose ink spans at least that many rows is hit. JPEG 2000 images are
  looked at through a reduced-resolution decode (only the lowest sub-bands: ~4 ms for a full-size
  mammogram) and decoded fully only when that view shows a candidate.
- Blanking changes pixels, so compressed images are decoded once and re-encoded once, losslessly,
  in the same transfer syntax where an encoder exists (JPEG 2000, JPEG-LS, RLE), otherwise as
  explicit VR little endian. Lossy inputs that need blanking are refused: a second lossy
  generation is never written. An unknown or undecodable codec is refused (fail closed).

Detection limits (also in benchmarks/README.md): text touching or overlapping the anatomy is not
found (it joins the anatomy component); ink fainter than ``background_margin`` of the image's
dynamic range above the background level is treated as background; a component that covers at
least ``anatomy_fraction`` of the largest component, or 2% of the image, is treated as anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from service.core.errors import PixelRefused
from workers.deid import pixel_codecs
from workers.deid.outcome import Box, PixelDecision
from workers.deid.policy_schema import PixelOptions

_MONO = ("MONOCHROME1", "MONOCHROME2")
_COLOR_OK = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")


@dataclass(frozen=True)
class _Layout:
    frames: int
    rows: int
    cols: int
    samples: int
    planar: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    invert: bool | None = None  # per frame, from the background (see _polarity)

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


def _layout(header: Dataset) -> _Layout:
    try:
        layout = _Layout(
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


# ---------------------------------------------------------------- detection on one frame


def _ink(a: np.ndarray, layout: _Layout, channel_axis: int | None) -> np.ndarray:
    """Signal above a black background as int32 (MONOCHROME1 flipped, colour = brightest)."""
    if channel_axis is not None:
        a = a.max(axis=channel_axis)
    v = a.astype(np.int32)
    return (layout.max_value - v) if layout.inverted else (v - layout.min_value)


def _block_map(frame: np.ndarray, layout: _Layout, block: int, stride: int) -> np.ndarray:
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
    Run-length union-find: a mammogram's grid has a few hundred runs, so this costs well under
    a millisecond without scipy.
    """
    h, w = occ.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = occ
    d = np.diff(padded, axis=1)
    rows_a, starts_a = np.nonzero(d == 1)
    ends_a = np.nonzero(d == -1)[1]
    rows, starts, ends = rows_a.tolist(), starts_a.tolist(), ends_a.tolist()
    n = len(rows)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_first = np.searchsorted(rows_a, np.arange(h + 1)).tolist()
    for r in range(1, h):
        i, a1 = row_first[r - 1], row_first[r]
        j, b1 = row_first[r], row_first[r + 1]
        while i < a1 and j < b1:
            if starts[i] <= ends[j] and starts[j] <= ends[i]:  # 8-connected overlap
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    runs = []
    info: dict[int, list[int]] = {}
    for k in range(n):
        root = find(k)
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
class _Candidates:
    """Non-anatomy components on a block grid, and the anatomy blocks never to touch."""

    block: int
    anatomy: np.ndarray
    boxes: list[tuple[int, int, int, int]]  # in blocks, half-open
    cut: int  # ink level separating background from anything else
    peak: int  # ink level a text candidate must reach somewhere


def _candidates(grid: np.ndarray, block: int, layout: _Layout, options: PixelOptions,
                margin_fraction: float | None = None) -> _Candidates:
    flat = grid.ravel()
    k_lo, k_hi = int(0.05 * (flat.size - 1)), int(0.99 * (flat.size - 1))
    part = np.partition(flat, (k_lo, k_hi))
    bg, hi = int(part[k_lo]), int(part[k_hi])
    full_range = layout.max_value - layout.min_value
    frac = options.background_margin if margin_fraction is None else margin_fraction
    cut = bg + max(2, int(frac * max(hi - bg, 0.1 * full_range)))
    occ = grid > cut
    peak = bg + int(options.text_contrast * (hi - bg))
    empty = _Candidates(block, np.zeros(grid.shape, dtype=bool), [], cut, peak)
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
    return _Candidates(block, anatomy, boxes, cut, peak)


def _find_text(frame: np.ndarray, layout: _Layout, options: PixelOptions,
               cands: _Candidates, frame_no: int) -> list[Box]:
    """Full-resolution ink boxes for each candidate, never overlapping anatomy blocks."""
    b, rows, cols = cands.block, layout.rows, layout.cols
    out: list[Box] = []
    for br0, bc0, br1, bc1 in cands.boxes:
        r0, c0 = max(0, (br0 - 1) * b), max(0, (bc0 - 1) * b)
        r1, c1 = min(rows, (br1 + 1) * b), min(cols, (bc1 + 1) * b)
        sub = frame[r0:r1, c0:c1]
        level = _ink(sub, layout, 2 if sub.ndim == 3 else None)
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


def _anatomy_pixels(cands: _Candidates, r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
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


def _frame_candidates(frame: np.ndarray, layout: _Layout,
                      options: PixelOptions) -> _Candidates:
    block, stride = _geometry(layout.rows)
    return _candidates(_block_map(frame, layout, block, stride), block, layout, options)


def _blank(frame: np.ndarray, boxes: list[Box], cands: _Candidates, value: int) -> None:
    for box in boxes:
        keep = _anatomy_pixels(cands, box.row0, box.col0, box.row1, box.col1)
        region = frame[box.row0 : box.row1, box.col0 : box.col1]
        if region.ndim == 3:
            region[~keep, :] = value
        else:
            region[~keep] = value


def _polarity(frame: np.ndarray, layout: _Layout) -> _Layout:
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


def _fill(layout: _Layout, options: PixelOptions) -> int:
    if options.fill is not None:
        return int(np.clip(options.fill, layout.min_value, layout.max_value))
    return layout.max_value if layout.inverted else layout.min_value


# ---------------------------------------------------------------- per transfer syntax


def _frames_view(arr: np.ndarray, layout: _Layout) -> np.ndarray:
    """(frames, rows, cols[, samples]) view, colour planes moved last without copying."""
    if layout.samples == 1:
        return arr.reshape(layout.frames, layout.rows, layout.cols)
    if layout.planar == 1:
        return arr.reshape(layout.frames, layout.samples, layout.rows, layout.cols).transpose(
            0, 2, 3, 1)
    return arr.reshape(layout.frames, layout.rows, layout.cols, layout.samples)


def _dtype(layout: _Layout, order: str) -> np.dtype:
    kind = "i" if layout.signed else "u"
    return np.dtype(f"{order}{kind}{layout.bits_allocated // 8}")


def _scan(frames: np.ndarray, layout: _Layout, options: PixelOptions,
          ) -> list[tuple[int, list[Box], _Candidates, int]]:
    found = []
    for f in range(layout.frames):
        fl = _polarity(frames[f], layout)
        cands = _frame_candidates(frames[f], fl, options)
        if cands.boxes:
            boxes = _find_text(frames[f], fl, options, cands, f)
            if boxes:
                found.append((f, boxes, cands, _fill(fl, options)))
    return found


def _native(value: bytes | memoryview, layout: _Layout, order: str,
            options: PixelOptions) -> PixelDecision:
    dtype = _dtype(layout, order)
    count = layout.nbytes // dtype.itemsize
    if len(memoryview(value).cast("B")) < layout.nbytes:
        raise PixelRefused("pixel data is shorter than its attributes say", code="pixel-short")
    frames = _frames_view(np.frombuffer(value, dtype=dtype, count=count), layout)
    found = _scan(frames, layout, options)
    if not found:
        return PixelDecision("unchanged", detail="no text found in the background")
    regions = [b for _, boxes, _, _ in found for b in boxes]
    if options.mode == "refuse-if-text":
        raise PixelRefused("burned-in text found in pixels", code="pixel-text")
    flat = np.frombuffer(value, dtype=dtype, count=count).copy()
    writable = _frames_view(flat, layout)
    for f, boxes, cands, fill in found:
        _blank(writable[f], boxes, cands, fill)
    tail = bytes(memoryview(value).cast("B")[layout.nbytes :])
    data = flat.tobytes() + tail if tail else flat.tobytes()
    return PixelDecision("blanked", regions=regions, new_pixel_data=data,
                         detail=f"blanked {len(regions)} region(s) in native pixels")


def _reduced_look(value: bytes | memoryview, layout: _Layout, options: PixelOptions,
                  ) -> tuple[bool, pixel_codecs.J2KInfo | None]:
    """True when a low-resolution look at every JPEG 2000 frame finds no candidate.

    First choice: the LL band rebuilt from the first packet alone (``pixel_codecs.ll_band_j2k``,
    ~1 ms, reads ~20 kB). Otherwise OpenJPEG's resolution reduction through Pillow (~4 ms for a
    full-size mammogram). Either way each LL sample stands for a 2**levels block, so text must
    be separated from the anatomy by at least one such block (32 px for 5 levels) to be seen.
    """
    streams = pixel_codecs.split_frames(value, layout.frames)
    info = pixel_codecs.j2k_info(streams[0])
    if layout.samples != 1 or layout.rows < 1024:
        # Small images decode fully in a few ms, and there the LL cells would be too coarse
        # for the anatomy/text separation the full-resolution look gets.
        return False, info
    for stream in streams:
        fast = pixel_codecs.ll_band_j2k(stream)
        if fast is not None:
            small, levels = fast
        else:
            levels = 0
            while levels < info.levels and (layout.rows >> (levels + 1)) >= 128 and levels < 5:
                levels += 1
            reduced = pixel_codecs.reduced_j2k(stream, levels, info) if levels >= 2 else None
            if reduced is None:
                return False, info
            small = reduced
        grid = _ink(small, _polarity(small, layout), None)
        # Low-pass samples are averages: a lower margin keeps thin strokes above the cut.
        cands = _candidates(grid, 1 << levels, layout, options, options.background_margin / 2)
        if cands.boxes:
            return False, info
    return True, info


def _compressed(header: Dataset, value: bytes | memoryview, layout: _Layout, ts: str,
                options: PixelOptions) -> PixelDecision:
    info = None
    if ts in pixel_codecs.J2K_FAMILY:
        clear, info = _reduced_look(value, layout, options)
        if clear:
            return PixelDecision(
                "unchanged", detail="no text candidate in a reduced-resolution JPEG 2000 decode")
    lossy = ts in pixel_codecs.LOSSY or (
        ts in ("1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203")
        and (info is None or not info.reversible))
    frames = pixel_codecs.decode(header, value, ts)
    if frames.shape[0] != layout.frames:
        raise PixelRefused("decoded frame count differs from NumberOfFrames",
                           code="pixel-undecodable")
    found = _scan(frames, layout, options)
    if not found:
        return PixelDecision("unchanged", decode_count=1,
                             detail="decoded once; no text found in the background")
    regions = [b for _, boxes, _, _ in found for b in boxes]
    if options.mode == "refuse-if-text":
        raise PixelRefused("burned-in text found in pixels", code="pixel-text")
    if lossy:
        raise PixelRefused("burned-in text in a lossy-compressed image; refusing to write a "
                           "second lossy generation", code="pixel-lossy")
    frames = np.ascontiguousarray(frames)
    for f, boxes, cands, fill in found:
        _blank(frames[f], boxes, cands, fill)
    if layout.photometric.startswith("YBR"):
        raise PixelRefused("burned-in text in YBR colour pixel data; cannot re-encode it "
                           "losslessly in the same colour space", code="pixel-photometric")
    if ts in pixel_codecs.ENCODERS:
        changed = {f for f, _, _, _ in found}
        originals = pixel_codecs.split_frames(value, layout.frames)
        parts: list[np.ndarray | bytes | memoryview] = [
            frames[f] if f in changed else originals[f] for f in range(layout.frames)]
        data = pixel_codecs.encode(header, parts, ts)
        return PixelDecision("blanked", regions=regions, new_pixel_data=data, decode_count=1,
                             encode_count=1, detail=f"blanked {len(regions)} region(s); "
                             "re-encoded losslessly in the same transfer syntax")
    native = frames.astype(_dtype(layout, "<"), copy=False)
    raw = native.tobytes()
    if len(raw) % 2:
        raw += b"\0"
    return PixelDecision("blanked", regions=regions, new_pixel_data=raw,
                         new_transfer_syntax=ExplicitVRLittleEndian, decode_count=1,
                         detail=f"blanked {len(regions)} region(s); no lossless encoder for the "
                         "input syntax, written as explicit VR little endian")


def clean_pixels(
    header: Dataset,
    pixel_value: bytes | memoryview,
    *,
    transfer_syntax: str,
    options: PixelOptions,
) -> PixelDecision:
    """Look for burned-in text in the background and blank it (see the module docstring).

    Refusals are re-raised from this frame with no traceback or context attached: the inner
    frames hold numpy views of ``pixel_value`` (often an mmap), and a traceback that kept them
    alive would stop the caller from releasing the map.
    """
    refusal: tuple[str, str] | None = None
    try:
        return _clean(header, pixel_value, str(transfer_syntax), options)
    except PixelRefused as exc:
        refusal = (exc.reason, exc.code)
    except Exception as exc:  # fail closed on anything unexpected, without values in the text
        refusal = (f"pixel check failed ({type(exc).__name__})", "pixel-error")
    raise PixelRefused(refusal[0], code=refusal[1])


def _clean(header: Dataset, pixel_value: bytes | memoryview, ts: str,
           options: PixelOptions) -> PixelDecision:
    if pixel_value is None or len(memoryview(pixel_value).cast("B")) == 0:
        return PixelDecision("no-pixels", detail="no pixel data")
    if options.mode == "off":
        return PixelDecision("unchanged", detail="pixel check off by policy")
    layout = _layout(header)
    if ts in pixel_codecs.NATIVE:
        if layout.photometric.startswith("YBR"):
            raise PixelRefused("uncompressed YBR pixel data is not supported by the pixel check",
                               code="pixel-photometric")
        return _native(pixel_value, layout, pixel_codecs.NATIVE[ts], options)
    known = pixel_codecs.J2K_FAMILY | pixel_codecs.LOSSLESS | pixel_codecs.LOSSY
    if ts not in known:
        raise PixelRefused("no decoder for the pixel data's transfer syntax",
                           code="pixel-codec")
    return _compressed(header, pixel_value, layout, ts, options)
