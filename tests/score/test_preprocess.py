"""Every preprocessing step is checked on its OUTPUT, through the real decode paths (pixel data
written with pydicom's encoders in each transfer syntax, read back from bytes)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_fragmented_frames
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from synthetic.mammogram import make_mammogram_with_truth
from workers.score.card import Crop, InputSize, Normalise, Orientation, Preprocessing, Voi, Window
from workers.score.preprocess import (
    PREPROCESSING_VERSION,
    PreprocessError,
    breast_box,
    decode,
    display,
    fit_and_pad,
    invert_monochrome1,
    largest_component,
    modality_lut,
    normalise,
    orient,
    preprocess,
    resize_area,
    thumbnail,
    voi,
    window,
)

SIZE = InputSize(rows=256, cols=208)
SYNTAXES = [ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless]


def roundtrip(ds: Dataset) -> Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def mammo(**kw: object) -> tuple[Dataset, object]:
    ds, truth = make_mammogram_with_truth(**kw)  # type: ignore[arg-type]
    return roundtrip(ds), truth


@pytest.mark.parametrize("ts", SYNTAXES)
def test_every_transfer_syntax_decodes_to_the_stored_values(ts: str) -> None:
    ds, truth = mammo(view="MLO", laterality="R", transfer_syntax=ts)
    assert ds.file_meta.TransferSyntaxUID == ts
    got = decode(ds)
    assert got.dtype == np.float32 and got.shape == (512, 416)
    assert np.array_equal(got, truth.pixels.astype(np.float32))  # type: ignore[attr-defined]
    if ts != ExplicitVRLittleEndian:
        plain, _ = mammo(view="MLO", laterality="R")
        a = preprocess(ds, Preprocessing(), SIZE).pixels
        assert np.array_equal(a, preprocess(plain, Preprocessing(), SIZE).pixels)


def test_undecodable_and_multiframe_are_refused_with_the_syntax_named() -> None:
    ds, _ = mammo(transfer_syntax=JPEG2000Lossless)
    frame = b"".join(next(generate_fragmented_frames(ds.PixelData)))
    ds.PixelData = encapsulate([frame[: len(frame) // 10]])   # a truncated codestream
    with pytest.raises(PreprocessError, match=r"cannot be decoded \(transfer syntax "
                                              r"1\.2\.840\.10008\.1\.2\.4\.90\)"):
        decode(ds)
    tomo, _ = mammo(frames=2, rows=64, cols=52)
    with pytest.raises(PreprocessError, match="multi-frame"):
        decode(tomo)


def test_modality_lut_applies_rescale() -> None:
    ds, truth = mammo()
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-100"
    got = modality_lut(decode(ds), ds)
    assert np.allclose(got, truth.pixels.astype(np.float64) * 2 - 100)  # type: ignore[attr-defined]


def test_window_functions_follow_the_standard() -> None:
    c, w = 2048.0, 1001.0
    x = np.array([c - 0.5 - (w - 1) / 2 - 5, c - 0.5 - (w - 1) / 2, c - 0.5,
                  c - 0.5 + (w - 1) / 2, 4095], dtype=np.float32)
    assert np.allclose(window(x, c, w, "LINEAR"), [0, 0, 0.5, 1, 1])
    assert np.allclose(window(np.array([c - w / 2, c, c + w / 2]), c, w, "LINEAR_EXACT"),
                       [0, 0.5, 1])
    sig = window(np.array([c - w, c, c + w]), c, w, "SIGMOID")
    assert sig[1] == pytest.approx(0.5) and sig[0] < 0.05 and sig[2] > 0.95


def test_voi_from_header_window_lut_card_and_fallback() -> None:
    ds, _truth = mammo()
    arr = decode(ds)
    c, w = float(ds.WindowCenter[0]), float(ds.WindowWidth[0])
    out, src = voi(arr, ds, Voi())
    assert src == "header-window" and np.array_equal(out, window(arr, c, w))
    out1, _ = voi(arr, ds, Voi(header_index=1))
    assert np.array_equal(out1, window(arr, float(ds.WindowCenter[1]), float(ds.WindowWidth[1])))
    # a VOI LUT Sequence wins over the window (prefer_lut), read back from the file as OW bytes
    table = (np.linspace(0, 1, 4096) ** 0.5 * 4095).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.LUTData = table.tobytes()
    item["LUTData"].VR = "OW"
    ds.VOILUTSequence = Sequence([item])
    ds = roundtrip(ds)
    out, src = voi(arr, ds, Voi())
    assert src == "header-lut"
    assert np.allclose(out, table[arr.astype(int)] / 4095.0)
    # the card's window
    out, src = voi(arr, ds, Voi(mode="window", window=Window(center=1000, width=500)))
    assert src == "card-window" and np.array_equal(out, window(arr, 1000, 500))
    # the header has nothing: the fallback percentile window
    del ds.VOILUTSequence, ds.WindowCenter, ds.WindowWidth
    out, src = voi(arr, ds, Voi())
    assert src == "fallback-percentile"
    assert out.min() == 0 and out.max() == 1
    assert 0.002 < float((out >= 1).mean()) < 0.01   # ~0.5 % above the 99.5th percentile
    out, src = voi(arr, ds, Voi(fallback="window", window=Window(center=2000, width=2000)))
    assert src == "fallback-window" and np.array_equal(out, window(arr, 2000, 2000))


def test_monochrome1_and_monochrome2_give_the_same_model_input() -> None:
    m2, _t2 = mammo(view="CC", laterality="R", photometric="MONOCHROME2")
    m1, _t1 = mammo(view="CC", laterality="R", photometric="MONOCHROME1")
    assert not np.array_equal(decode(m1), decode(m2))
    assert np.array_equal(decode(m1), 4095 - decode(m2))
    # the same window, mirrored for the inverted stored values (LINEAR's half-pixel offset)
    c, w = 2000.0, 2400.0
    p2 = Preprocessing(voi=Voi(mode="window", window=Window(center=c, width=w)))
    p1 = Preprocessing(voi=Voi(mode="window", window=Window(center=4095 - c + 1, width=w)))
    a2, a1 = preprocess(m2, p2, SIZE), preprocess(m1, p1, SIZE)
    assert np.allclose(a1.pixels, a2.pixels, atol=1e-4)
    # percentiles symmetric about 50 are inversion-invariant by construction
    pp = Preprocessing(voi=Voi(mode="percentile", percentiles=(1.0, 99.0)))
    assert np.allclose(preprocess(m1, pp, SIZE).pixels, preprocess(m2, pp, SIZE).pixels,
                       atol=1e-4)
    assert np.array_equal(invert_monochrome1(np.array([0.0, 0.25]), "MONOCHROME1"), [1, 0.75])


def _left_right_mass(a: np.ndarray) -> tuple[float, float]:
    half = a.shape[1] // 2
    return float(a[:, :half].sum()), float(a[:, half:].sum())


@pytest.mark.parametrize("lat", ["L", "R"])
def test_flip_puts_the_chest_wall_on_the_convention_side(lat: str) -> None:
    ds, truth = mammo(view="MLO", laterality=lat)
    assert truth.breast_mask[:, :10].any() == (lat == "L")  # type: ignore[attr-defined]
    out = preprocess(ds, Preprocessing(), SIZE)
    assert out.flipped == (lat == "R") and out.laterality_check == "agrees"
    left, right = _left_right_mass(out.pixels - out.pixels.min())
    assert left > 1.5 * right
    right_conv = preprocess(ds, Preprocessing(orientation=Orientation(chest_wall="right")), SIZE)
    left2, right2 = _left_right_mass(right_conv.pixels - right_conv.pixels.min())
    assert right2 > 1.5 * left2


def test_pixel_mass_check_overrides_a_wrong_header() -> None:
    ds, _ = mammo(view="CC", laterality="R")
    ds.ImageLaterality = "L"
    ds.PatientOrientation = ["A", "R"]   # claims chest wall on the left; pixels say right
    out = preprocess(ds, Preprocessing(), SIZE)
    assert out.laterality_check == "disagrees" and out.flipped
    left, right = _left_right_mass(out.pixels - out.pixels.min())
    assert left > 1.5 * right
    trusting = Preprocessing(orientation=Orientation(pixel_mass_check=False))
    out = preprocess(ds, trusting, SIZE)
    assert out.laterality_check == "header-only" and not out.flipped
    # a symmetric image: the pixel check abstains, the header decides
    flat = np.ones((20, 20), dtype=np.float32)
    _, flipped, check = orient(flat, "right", Orientation())
    assert (flipped, check) == (True, "header-only")


def test_largest_component_with_diagonal_touch() -> None:
    m = np.zeros((8, 8), dtype=bool)
    m[0:2, 0:2] = True          # 4 pixels
    m[2, 2] = True              # touches diagonally: same component (5)
    m[5:8, 4:8] = True          # 12 pixels: the largest
    comp = largest_component(m)
    assert comp.sum() == 12 and comp[5:8, 4:8].all()
    m[4, 3] = True              # diagonal bridge to the big one... not to the small one
    assert largest_component(m).sum() == 13
    assert not largest_component(np.zeros((4, 4), dtype=bool)).any()


def test_crop_box_holds_the_breast_and_little_background_and_drops_burned_in_text() -> None:
    ds, truth = mammo(view="CC", laterality="L", burned_in_text="ODEGARD")
    shown = display(ds, Preprocessing())
    r0, r1, c0, c1 = breast_box(shown, Crop())
    mask = truth.breast_mask  # type: ignore[attr-defined]
    rr, cc = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert r0 <= rr[0] and r1 >= rr[-1] + 1 and c0 <= cc[0] and c1 >= cc[-1] + 1
    inside = mask[r0:r1, c0:c1]
    assert 1 - inside.mean() < 0.30                       # an elliptical breast fills ~79 %
    assert (r1 - r0) * (c1 - c0) < 0.75 * mask.size
    tr0, tc0, tr1, tc1 = truth.text_boxes[0]  # type: ignore[attr-defined]
    assert tr1 <= r0 or tc0 >= c1 or tr0 >= r1 or tc1 <= c0   # text is outside the crop
    with pytest.raises(PreprocessError, match="no breast"):
        breast_box(np.zeros((64, 64), dtype=np.float32), Crop())


def test_resize_keeps_aspect_and_area_means() -> None:
    tall = np.random.default_rng(0).uniform(0, 1, (1000, 250)).astype(np.float32)
    out, scale, (r0, r1, c0, c1) = fit_and_pad(tall, SIZE, 0.0, "left")
    assert out.shape == (256, 208)
    assert scale == pytest.approx(256 / 1000)
    assert (r1 - r0, c1 - c0) == (256, 64) and c0 == 0     # 4:1 kept, against the left side
    assert out[:, 64:].max() == 0                          # padding
    assert out[:, :64].mean() == pytest.approx(tall.mean(), abs=0.01)
    wide = np.full((100, 400), 0.7, dtype=np.float32)
    out, _, (r0, r1, c0, c1) = fit_and_pad(wide, SIZE, 0.0, "right")
    assert (r1 - r0, c1 - c0) == (52, 208) and r0 == (256 - 52) // 2
    assert np.allclose(out[r0:r1, c0:c1], 0.7)            # a constant stays constant
    assert np.allclose(resize_area(np.full((10, 10), 3.0, dtype=np.float32), 25, 25), 3.0)


def test_normalisation_statistics() -> None:
    rng = np.random.default_rng(1)
    arr = rng.uniform(0.2, 0.9, (64, 64)).astype(np.float32)
    breast = np.zeros_like(arr, dtype=bool)
    breast[:, :40] = True
    z = normalise(arr, breast, Normalise())
    assert float(z[breast].mean()) == pytest.approx(0, abs=1e-5)
    assert float(z[breast].std()) == pytest.approx(1, abs=1e-4)
    fixed = normalise(arr, breast, Normalise(mode="fixed", mean=0.5, std=0.25))
    assert np.allclose(fixed, (arr - 0.5) / 0.25)
    ds, _ = mammo(view="MLO", laterality="L")
    out = preprocess(ds, Preprocessing(), SIZE).pixels
    body = out > out.min() + 1e-3
    assert abs(float(out[body].mean())) < 0.2 and 0.8 < float(out[body].std()) < 1.2


def test_thumbnail_and_version() -> None:
    ds, _ = mammo()
    th = thumbnail(ds, Preprocessing(), max_side=128)
    assert th.dtype == np.uint8 and th.shape == (128, 104) and th.max() > 200
    assert PREPROCESSING_VERSION == Preprocessing().version == "mammo-1"


def test_preprocess_module_does_not_import_torch() -> None:
    code = ("import sys, workers.score.preprocess, workers.score.aggregate, "
            "workers.score.card; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
