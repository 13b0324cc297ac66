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

This module decides per transfer syntax how the pixels are looked at and written back;
pixel_text.py finds and blanks text on one frame; pixel_codecs.py decodes and encodes.
"""

from __future__ import annotations

import os

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from service.core.errors import PixelRefused, transient
from workers.deid import pixel_codecs
from workers.deid.outcome import PixelDecision
from workers.deid.pixel_text import (
    Layout,
    blank_boxes,
    find_candidates,
    ink_level,
    layout_of,
    polarity,
    scan_frames,
)
from workers.deid.policy_schema import PixelOptions

# ---------------------------------------------------------------- per transfer syntax


def _frames_view(arr: np.ndarray, layout: Layout) -> np.ndarray:
    """(frames, rows, cols[, samples]) view, colour planes moved last without copying."""
    if layout.samples == 1:
        return arr.reshape(layout.frames, layout.rows, layout.cols)
    if layout.planar == 1:
        return arr.reshape(layout.frames, layout.samples, layout.rows, layout.cols).transpose(
            0, 2, 3, 1)
    return arr.reshape(layout.frames, layout.rows, layout.cols, layout.samples)


def _dtype(layout: Layout, order: str) -> np.dtype:
    kind = "i" if layout.signed else "u"
    return np.dtype(f"{order}{kind}{layout.bits_allocated // 8}")


def _native(value: bytes | memoryview, layout: Layout, order: str,
            options: PixelOptions) -> PixelDecision:
    dtype = _dtype(layout, order)
    count = layout.nbytes // dtype.itemsize
    if len(memoryview(value).cast("B")) < layout.nbytes:
        raise PixelRefused("pixel data is shorter than its attributes say", code="pixel-short")
    frames = _frames_view(np.frombuffer(value, dtype=dtype, count=count), layout)
    found = scan_frames(frames, layout, options)
    if not found:
        return PixelDecision("unchanged", detail="no text found in the background")
    regions = [b for _, boxes, _, _ in found for b in boxes]
    if options.mode == "refuse-if-text":
        raise PixelRefused("burned-in text found in pixels", code="pixel-text")
    flat = np.frombuffer(value, dtype=dtype, count=count).copy()
    writable = _frames_view(flat, layout)
    for f, boxes, cands, fill in found:
        blank_boxes(writable[f], boxes, cands, fill)
    tail = bytes(memoryview(value).cast("B")[layout.nbytes :])
    data = flat.tobytes() + tail if tail else flat.tobytes()
    return PixelDecision("blanked", regions=regions, new_pixel_data=data,
                         detail=f"blanked {len(regions)} region(s) in native pixels")


def _reduced_look(value: bytes | memoryview, layout: Layout, options: PixelOptions,
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
        grid = ink_level(small, polarity(small, layout), None)
        # Low-pass samples are averages: a lower margin keeps thin strokes above the cut.
        cands = find_candidates(grid, 1 << levels, layout, options, options.background_margin / 2)
        if cands.boxes:
            return False, info
    return True, info


def _compressed(header: Dataset, value: bytes | memoryview, layout: Layout, ts: str,
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
    found = scan_frames(frames, layout, options)
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
        blank_boxes(frames[f], boxes, cands, fill)
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
    fault: BaseException | None = None
    try:
        return _clean(header, pixel_value, str(transfer_syntax), options)
    except PixelRefused as exc:
        refusal = (exc.reason, exc.code)
    except Exception as exc:  # fail closed on anything unexpected, without values in the text
        if transient(exc):  # the machine's fault (memory, disk): retried, not a refusal
            fault = _bare(exc)
        else:
            refusal = (f"pixel check failed ({type(exc).__name__})", "pixel-error")
    if fault is not None:
        raise fault from None
    assert refusal is not None
    raise PixelRefused(refusal[0], code=refusal[1])


def _bare(exc: BaseException) -> BaseException:
    """The same fault without its traceback (see ``clean_pixels``) or any message text."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return type(exc)(exc.errno, os.strerror(exc.errno))
    return type(exc)()


def _clean(header: Dataset, pixel_value: bytes | memoryview, ts: str,
           options: PixelOptions) -> PixelDecision:
    if pixel_value is None or len(memoryview(pixel_value).cast("B")) == 0:
        return PixelDecision("no-pixels", detail="no pixel data")
    if options.mode == "off":
        return PixelDecision("unchanged", detail="pixel check off by policy")
    layout = layout_of(header)
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
