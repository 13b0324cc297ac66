"""Synthetic screening mammograms with realistic MG headers, made on the spot (no downloads).

Real screening exams cannot leave the hospital, yet every stage (de-identification, pixel
scrubbing, benchmarks, the demo PACS) needs images that look like what a Hologic or GE unit
writes: a 4096 x 3328 (full size) 16-bit image with 12-14 bits stored, a bright breast against the
chest wall, a near-black background, and sometimes the patient's name burned into a corner while
the header still says ``BurnedInAnnotation = NO``. Identity values are synthetic but shaped like
the real thing (``synthetic.identity``).

``make_mammogram`` builds one view from a ``ViewSpec`` (``synthetic.spec``); exams of several
views are ``synthetic.exam``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from synthetic.font import render_lines
from synthetic.header import mg_header
from synthetic.spec import Corner, ViewSpec

_ENCODER_PLUGIN = {
    JPEG2000Lossless: "pylibjpeg",
    JPEGLSLossless: "pyjpegls",
    RLELossless: "pylibjpeg",
}


@dataclass
class Truth:
    """What the generator put where, so tests can check the scrubber against it."""

    breast_mask: np.ndarray = field(repr=False)
    text_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    text_mask: np.ndarray | None = field(default=None, repr=False)
    pixels: np.ndarray | None = field(default=None, repr=False)


def _smooth_noise(rng: np.random.Generator, rows: int, cols: int, cell: int) -> np.ndarray:
    """Band-limited noise: a coarse random grid interpolated bilinearly (two small matmuls)."""
    gr, gc = rows // cell + 2, cols // cell + 2
    grid = rng.normal(0.0, 1.0, (gr, gc)).astype(np.float32)

    def interp_matrix(n: int, g: int) -> np.ndarray:
        pos = np.linspace(0, g - 1.001, n, dtype=np.float32)
        lo = np.floor(pos).astype(int)
        w = pos - lo
        m = np.zeros((n, g), dtype=np.float32)
        m[np.arange(n), lo] = 1 - w
        m[np.arange(n), lo + 1] = w
        return m

    return interp_matrix(rows, gr) @ grid @ interp_matrix(cols, gc).T


def _breast(
    rng: np.random.Generator, rows: int, cols: int, view: str, laterality: str, max_value: int
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue intensities (float, 0 outside) and the tissue mask, chest wall on the left."""
    y = (np.arange(rows, dtype=np.float32) + 0.5) / rows
    x = (np.arange(cols, dtype=np.float32) + 0.5) / cols
    if view == "CC":
        cy, ry, rx = 0.5, 0.40, 0.62
    else:
        cy, ry, rx = 0.45, 0.47, 0.66
    r2 = ((y[:, None] - cy) / ry) ** 2 + (x[None, :] / rx) ** 2
    mask = r2 < 1.0
    # Thicker in the middle, thinning toward the skin line: intensity falls off near the edge.
    profile = np.clip(1.0 - r2, 0, 1) ** 0.35
    texture = (
        0.55 * _smooth_noise(rng, rows, cols, max(8, rows // 12))
        + 0.30 * _smooth_noise(rng, rows, cols, max(4, rows // 48))
    )
    tissue = 0.35 + 0.32 * profile + 0.08 * texture
    if view == "MLO":
        # Pectoral muscle: a brighter triangle in the upper chest-wall corner.
        pect = (x[None, :] / 0.28 + y[:, None] / 0.55) < 1.0
        tissue = np.where(pect & mask, tissue + 0.12, tissue)
    fine = rng.normal(0.0, 0.012, (rows, cols)).astype(np.float32)
    value = np.where(mask, np.clip(tissue + fine, 0.05, 0.95) * max_value, 0.0)
    return value.astype(np.float32), mask


def _text_origin(
    corner: Corner | tuple[int, int], shape: tuple[int, int], text_shape: tuple[int, int],
    chest_wall_right: bool,
) -> tuple[int, int]:
    rows, cols = shape
    th, tw = text_shape
    margin_r, margin_c = max(4, rows // 50), max(4, cols // 50)
    if isinstance(corner, tuple):
        return corner
    if corner == "auto":
        # Units burn identity text into the upper corner away from the chest wall.
        corner = "tl" if chest_wall_right else "tr"
    if corner == "edge":
        c0 = margin_c if chest_wall_right else cols - margin_c - tw
        return (rows - th) // 2, c0
    r0 = margin_r if corner[0] == "t" else rows - margin_r - th
    c0 = margin_c if corner[1] == "l" else cols - margin_c - tw
    return r0, c0


def render_image(spec: ViewSpec, seed: int) -> tuple[np.ndarray, Truth]:
    """The pixel array (uint16) and where the breast and the text are (one frame)."""
    view, laterality, (rows, cols) = spec.view, spec.laterality, spec.shape
    bits_stored, photometric, burned_in_text = spec.bits_stored, spec.photometric, \
        spec.burned_in_text
    rng = np.random.default_rng(seed)
    max_value = (1 << bits_stored) - 1
    value, mask = _breast(rng, rows, cols, view, laterality, max_value)
    # Detector background: near zero, a few counts of noise.
    background = rng.integers(0, max(2, max_value // 800), (rows, cols), dtype=np.uint16)
    img = np.where(mask, value.astype(np.uint16), background)
    chest_wall_right = laterality == "R"
    if chest_wall_right:
        img = img[:, ::-1]
        mask = mask[:, ::-1]
    truth = Truth(breast_mask=np.ascontiguousarray(mask))
    if burned_in_text:
        height = spec.text_height or max(20, min(60, rows // 80))
        ink = render_lines(burned_in_text.split("\n"), height)
        r0, c0 = _text_origin(spec.text_corner, (rows, cols), ink.shape, chest_wall_right)
        r1, c1 = min(rows, r0 + ink.shape[0]), min(cols, c0 + ink.shape[1])
        ink = ink[: r1 - r0, : c1 - c0]
        white = max_value if spec.text_value is None else spec.text_value
        img = np.ascontiguousarray(img)
        img[r0:r1, c0:c1][ink] = white
        tm = np.zeros((rows, cols), dtype=bool)
        tm[r0:r1, c0:c1] = ink
        truth.text_mask = tm
        truth.text_boxes.append((r0, c0, r1, c1))
    img = np.ascontiguousarray(img, dtype=np.uint16)
    if photometric == "MONOCHROME1":
        img = (max_value - img).astype(np.uint16)
    truth.pixels = img
    return img, truth


def make_mammogram_with_truth(
    spec: ViewSpec | None = None, /, **changes: Any
) -> tuple[FileDataset, Truth]:
    """One view plus the ground truth (breast mask, text boxes, frame-0 pixels); ``changes``
    are ``ViewSpec`` fields applied to ``spec`` (or the default)."""
    spec = replace(spec or ViewSpec(), **changes)
    if spec.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError("photometric must be MONOCHROME1 or MONOCHROME2")
    if not 8 < spec.bits_stored <= 16:
        raise ValueError("bits_stored must be 9..16 (16 bits allocated)")
    planes = []
    truth: Truth | None = None
    for f in range(spec.frames):
        img, t = render_image(spec, spec.seed + f)
        truth = truth or t
        planes.append(img)
    assert truth is not None
    series_uid = spec.series_uid or spec.identity.uid("series", spec.view, spec.laterality,
                                                      spec.frames)
    ds = mg_header(spec, series_uid)
    arr = planes[0] if spec.frames == 1 else np.stack(planes)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID("1.2.840.113681.1.1")
    meta.ImplementationVersionName = "HOLOGIC_AWS_1"
    meta.SourceApplicationEntityTitle = "MAMMO_TRO_AWS"
    fds = FileDataset("", ds, file_meta=meta, preamble=b"\0" * 128)
    fds.PixelData = arr.tobytes()
    fds["PixelData"].VR = "OW"
    ts = UID(spec.transfer_syntax)
    if ts == ImplicitVRLittleEndian:  # written as such by save_as (file meta decides)
        fds.file_meta.TransferSyntaxUID = ts
    elif ts != ExplicitVRLittleEndian:
        if ts not in _ENCODER_PLUGIN:
            raise ValueError("unsupported transfer syntax for the synthetic generator")
        fds.compress(ts, arr, encoding_plugin=_ENCODER_PLUGIN[ts], generate_instance_uid=False)
        fds.LossyImageCompression = "00"
    return fds, truth


def make_mammogram(spec: ViewSpec | None = None, /, **changes: Any) -> FileDataset:
    """One synthetic view (``changes``: ``ViewSpec`` fields)."""
    ds, _ = make_mammogram_with_truth(spec, **changes)
    return ds
