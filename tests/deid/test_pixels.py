"""Burned-in text: found in the background, blanked exactly there, nothing else touched.

Images come from the synthetic generator (which knows where the breast and the text are) and from
deid-data's ultrasound with a burned-in patient line. Compressed results are decoded again and
compared with what the uncompressed path produced: lossless means equal, sample for sample.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from service.core.errors import PixelRefused
from synthetic.mammogram import Truth, make_mammogram_with_truth
from workers.deid.outcome import PixelDecision
from workers.deid.pixels import clean_pixels
from workers.deid.policy_schema import PixelOptions

J2K = "1.2.840.10008.1.2.4.90"
JLS = "1.2.840.10008.1.2.4.80"
JLS_NEAR = "1.2.840.10008.1.2.4.81"
RLE = "1.2.840.10008.1.2.5"
NAME = "ØDEGÅRD^ÅSE 120578"
CLEAN = PixelOptions()


def run(ds: Dataset, options: PixelOptions = CLEAN) -> PixelDecision:
    return clean_pixels(ds, ds.PixelData, transfer_syntax=ds.file_meta.TransferSyntaxUID,
                        options=options)


def decoded(ds: Dataset, decision: PixelDecision) -> np.ndarray:
    """The pixels the engine would write, decoded by pydicom (frames first)."""
    out = Dataset()
    for kw in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit",
               "PixelRepresentation", "PhotometricInterpretation", "NumberOfFrames",
               "PlanarConfiguration"):
        if kw in ds:
            setattr(out, kw, ds[kw].value)
    out.file_meta = FileMetaDataset()
    out.file_meta.TransferSyntaxUID = UID(
        decision.new_transfer_syntax or ds.file_meta.TransferSyntaxUID)
    out.PixelData = decision.new_pixel_data if decision.new_pixel_data else ds.PixelData
    arr = out.pixel_array
    return arr if "NumberOfFrames" in ds and ds.NumberOfFrames > 1 else arr[None]


def assert_cleaned(ds: Dataset, truth: Truth, decision: PixelDecision, *,
                   photometric: str = "MONOCHROME2") -> np.ndarray:
    assert decision.action == "blanked"
    assert decision.regions
    after = decoded(ds, decision)[0]
    before = truth.pixels
    assert before is not None and truth.text_mask is not None
    # Every pixel of the breast is exactly what it was.
    assert np.array_equal(after[truth.breast_mask], before[truth.breast_mask])
    # Every ink pixel is gone (display black).
    black = (1 << int(ds.BitsStored)) - 1 if photometric == "MONOCHROME1" else 0
    assert np.all(after[truth.text_mask] == black)
    # Nothing outside the reported regions changed.
    outside = np.ones(after.shape, dtype=bool)
    for box in decision.regions:
        outside[box.row0 : box.row1, box.col0 : box.col1] = False
    assert np.array_equal(after[outside], before[outside])
    return after


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("corner", ["tl", "tr", "bl", "br", "edge"])
def test_text_in_every_corner_is_blanked_and_breast_untouched(corner: str,
                                                              photometric: str) -> None:
    text = "ID 4417" if corner == "edge" else NAME
    ds, truth = make_mammogram_with_truth(burned_in_text=text, text_height=20,
                                          text_corner=corner, photometric=photometric)  # type: ignore[arg-type]
    assert ds.BurnedInAnnotation == "NO"  # the header lies, as real units do
    decision = run(ds)
    assert decision.new_transfer_syntax is None
    assert (decision.decode_count, decision.encode_count) == (0, 0)
    assert_cleaned(ds, truth, decision, photometric=photometric)


@pytest.mark.parametrize("view,laterality", [("CC", "R"), ("MLO", "L"), ("MLO", "R")])
def test_multi_line_text_on_other_views(view: str, laterality: str) -> None:
    ds, truth = make_mammogram_with_truth(view=view, laterality=laterality,  # type: ignore[arg-type]
                                          burned_in_text="ØDEGÅRD\n12057847391", text_height=21)
    assert_cleaned(ds, truth, run(ds))


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, J2K, JLS, RLE])
def test_text_free_image_is_unchanged_without_new_bytes(ts: str, photometric: str) -> None:
    # 1024 rows: from there on JPEG 2000 is looked at through its LL band (no full decode).
    ds, _ = make_mammogram_with_truth(transfer_syntax=ts, photometric=photometric, rows=1024,
                                      cols=832)
    decision = run(ds)
    assert decision.action == "unchanged"
    assert decision.new_pixel_data is None and decision.new_transfer_syntax is None
    assert decision.encode_count == 0
    if ts in (ExplicitVRLittleEndian, J2K):
        assert decision.decode_count == 0  # native view / reduced J2K look, no full decode


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("ts", [J2K, JLS, RLE])
def test_compressed_text_is_blanked_and_reencoded_losslessly(ts: str, photometric: str) -> None:
    kwargs = dict(burned_in_text="ÅSE Ø 4417", text_height=20, photometric=photometric,
                  view="MLO", laterality="R")
    native, truth = make_mammogram_with_truth(**kwargs)  # type: ignore[arg-type]
    expected = decoded(native, run(native))
    ds, _ = make_mammogram_with_truth(transfer_syntax=ts, **kwargs)  # type: ignore[arg-type]
    decision = run(ds)
    assert (decision.decode_count, decision.encode_count) == (1, 1)
    assert decision.new_transfer_syntax is None  # same syntax: an encoder exists
    assert decision.new_pixel_data is not None
    assert decision.new_pixel_data[:4] == b"\xfe\xff\x00\xe0"  # encapsulated: an item tag
    after = assert_cleaned(ds, truth, decision, photometric=photometric)
    assert np.array_equal(after, expected[0])  # exactly what the uncompressed path produced


def test_lossy_input_with_text_is_refused_and_without_text_passes() -> None:
    from pydicom.uid import JPEGLSNearLossless

    text_ds, _ = make_mammogram_with_truth(burned_in_text=NAME, text_height=20)
    text_ds.compress(JPEGLSNearLossless, encoding_plugin="pyjpegls", jls_error=2,
                     generate_instance_uid=False)
    with pytest.raises(PixelRefused) as exc:
        run(text_ds)
    assert exc.value.code == "pixel-lossy"
    plain, _ = make_mammogram_with_truth()
    plain.compress(JPEGLSNearLossless, encoding_plugin="pyjpegls", jls_error=2,
                   generate_instance_uid=False)
    decision = run(plain)
    assert decision.action == "unchanged" and decision.new_pixel_data is None


def test_lossy_jpeg_baseline_from_deid_data_with_text_is_refused() -> None:
    from deid_data import data

    ds = pydicom.dcmread(os.path.join(os.path.dirname(data.__file__),
                                      "dicom-cookies", "image1.dcm"))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    with pytest.raises(PixelRefused):
        run(ds)


def test_multi_frame_is_cleaned_per_frame() -> None:
    ds, truth = make_mammogram_with_truth(frames=3, burned_in_text=NAME, text_height=20)
    decision = run(ds)
    assert decision.action == "blanked"
    assert sorted({b.frame for b in decision.regions}) == [0, 1, 2]
    after = decoded(ds, decision)
    before = ds.pixel_array
    assert truth.text_mask is not None
    for f in range(3):
        assert np.array_equal(after[f][truth.breast_mask], before[f][truth.breast_mask])
        assert np.all(after[f][truth.text_mask] == 0)


def test_multi_frame_jpeg2000_without_text_needs_no_decode() -> None:
    ds, _ = make_mammogram_with_truth(frames=2, transfer_syntax=J2K, rows=1024, cols=832)
    decision = run(ds)
    assert decision.action == "unchanged" and decision.decode_count == 0


def test_eight_bit_image() -> None:
    ds, truth = make_mammogram_with_truth(burned_in_text=NAME, text_height=20, bits_stored=16)
    assert truth.pixels is not None
    arr8 = (truth.pixels >> 8).astype(np.uint8)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = arr8.tobytes()
    ds["PixelData"].VR = "OB"
    decision = run(ds)
    after = decoded(ds, decision)[0]
    assert decision.action == "blanked"
    assert np.array_equal(after[truth.breast_mask], arr8[truth.breast_mask])
    assert truth.text_mask is not None and np.all(after[truth.text_mask] == 0)


def test_ultrasound_patient_line_from_deid_data_is_blanked() -> None:
    from deid_data import data

    ds = pydicom.dcmread(os.path.join(os.path.dirname(data.__file__),
                                      "ultrasounds", "GREYSCALE_IMAGE.dcm"))
    before = ds.pixel_array.copy()
    decision = run(ds)
    assert decision.action == "blanked"
    after = decoded(ds, decision)[0]
    # The top line carries name, ID and birth date: all of it is black now.
    assert before[5:40, 0:900].max() > 200
    assert after[5:40, 0:900].max() == 0
    # The scan area itself is untouched.
    assert np.array_equal(after[150:700, 150:880], before[150:700, 150:880])


def test_refuse_if_text_mode_and_off_mode() -> None:
    ds, _ = make_mammogram_with_truth(burned_in_text=NAME, text_height=20)
    with pytest.raises(PixelRefused) as exc:
        run(ds, PixelOptions(mode="refuse-if-text"))
    assert exc.value.code == "pixel-text"
    assert NAME not in str(exc.value)
    off = run(ds, PixelOptions(mode="off"))
    assert off.action == "unchanged" and off.new_pixel_data is None
    plain, _ = make_mammogram_with_truth()
    assert run(plain, PixelOptions(mode="refuse-if-text")).action == "unchanged"


def test_custom_fill_value() -> None:
    ds, truth = make_mammogram_with_truth(burned_in_text=NAME, text_height=20)
    after = decoded(ds, run(ds, PixelOptions(fill=7)))[0]
    assert truth.text_mask is not None and np.all(after[truth.text_mask] == 7)


def test_refusals_fail_closed() -> None:
    ds, _ = make_mammogram_with_truth()
    with pytest.raises(PixelRefused) as exc:
        clean_pixels(ds, ds.PixelData, transfer_syntax="1.2.840.10008.1.2.4.100", options=CLEAN)
    assert exc.value.code == "pixel-codec"
    with pytest.raises(PixelRefused) as exc:
        clean_pixels(ds, ds.PixelData[:1000], transfer_syntax=ExplicitVRLittleEndian,
                     options=CLEAN)
    assert exc.value.code == "pixel-short"
    j2k, _ = make_mammogram_with_truth(transfer_syntax=J2K)
    with pytest.raises(PixelRefused):
        clean_pixels(j2k, j2k.PixelData[:200], transfer_syntax=J2K, options=CLEAN)
    assert clean_pixels(ds, b"", transfer_syntax=ExplicitVRLittleEndian,
                        options=CLEAN).action == "no-pixels"


def test_options_from_policy_mapping() -> None:
    opts = PixelOptions.model_validate({"mode": "refuse-if-text", "margin": 2})
    assert opts.mode == "refuse-if-text" and opts.margin == 2
    with pytest.raises(ValidationError, match="mdoe"):
        PixelOptions.model_validate({"mdoe": "off"})
    with pytest.raises(ValidationError, match="mode"):
        PixelOptions.model_validate({"mode": "maybe"})
    with pytest.raises(ValidationError, match="margin"):
        PixelOptions.model_validate({"margin": -1})


@pytest.mark.slow
def test_full_size_jpeg2000_with_text_one_decode_one_encode() -> None:
    ds, truth = make_mammogram_with_truth(full_size=True, transfer_syntax=J2K,
                                          burned_in_text=NAME, text_height=24)
    decision = run(ds)
    assert (decision.decode_count, decision.encode_count) == (1, 1)
    assert_cleaned(ds, truth, decision)
    plain, _ = make_mammogram_with_truth(full_size=True, transfer_syntax=J2K)
    assert run(plain).decode_count == 0


def test_refusal_leaves_no_view_of_a_mapped_file_alive(tmp_path: Path) -> None:
    """The engine maps the source file and closes the map after the pixel stage, also on refusal."""
    ds, _ = make_mammogram_with_truth(burned_in_text=NAME, text_height=20)
    path = tmp_path / "x.raw"
    path.write_bytes(ds.PixelData)
    with path.open("rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mm)
    with pytest.raises(PixelRefused):
        clean_pixels(ds, view, transfer_syntax=ExplicitVRLittleEndian,
                     options=PixelOptions(mode="refuse-if-text"))
    view.release()
    mm.close()  # raises BufferError if a numpy view of the map were still alive


@pytest.mark.parametrize("name", ["RGB_IMAGE.dcm", "ultrasound-multiframe.dcm"])
def test_colour_ultrasound_from_deid_data(name: str) -> None:
    """RGB, planar configuration 0 and 1, 30 frames: text blanked in every channel."""
    from deid_data import data

    ds = pydicom.dcmread(os.path.join(os.path.dirname(data.__file__), "ultrasounds", name))
    before = ds.pixel_array.copy()
    decision = run(ds)
    assert decision.action == "blanked"
    after = decoded(ds, decision)
    before = before if before.ndim == 4 else before[None]
    assert after.shape == before.shape
    changed = np.any(after != before, axis=-1)
    for box in decision.regions:
        changed[box.frame, box.row0 : box.row1, box.col0 : box.col1] = False
    assert not changed.any()  # only inside the reported boxes
    blanked = np.any(after != before, axis=-1)
    assert blanked.sum() > 1000
    assert after[blanked].max() == 0  # every changed pixel is black in all channels


def test_big_endian_native_pixels() -> None:
    ds, truth = make_mammogram_with_truth(burned_in_text=NAME, text_height=20)
    assert truth.pixels is not None
    swapped = truth.pixels.astype(">u2").tobytes()
    decision = clean_pixels(ds, swapped, transfer_syntax="1.2.840.10008.1.2.2", options=CLEAN)
    assert decision.action == "blanked" and decision.new_pixel_data is not None
    after = np.frombuffer(decision.new_pixel_data, dtype=">u2").reshape(truth.pixels.shape)
    assert np.array_equal(after[truth.breast_mask], truth.pixels[truth.breast_mask])
    assert truth.text_mask is not None and np.all(after[truth.text_mask] == 0)


def test_multi_frame_jpeg2000_text_in_one_frame_reencodes_only_that_frame() -> None:
    _, truth = make_mammogram_with_truth(burned_in_text=NAME, text_height=20)
    plain, _truth = make_mammogram_with_truth(frames=3)
    assert truth.pixels is not None and truth.text_mask is not None
    frames = plain.pixel_array.copy()
    frames[1] = truth.pixels
    plain.PixelData = frames.tobytes()
    plain.compress(J2K, frames, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    decision = run(plain)
    assert decision.action == "blanked"
    assert {b.frame for b in decision.regions} == {1}
    assert (decision.decode_count, decision.encode_count) == (1, 1)
    after = decoded(plain, decision)
    assert np.array_equal(after[0], frames[0]) and np.array_equal(after[2], frames[2])
    assert np.all(after[1][truth.text_mask] == 0)
    assert np.array_equal(after[1][truth.breast_mask], frames[1][truth.breast_mask])
    from workers.deid import pixel_codecs

    old = pixel_codecs.split_frames(plain.PixelData, 3)
    new = pixel_codecs.split_frames(decision.new_pixel_data or b"", 3)
    assert bytes(old[0]) == bytes(new[0]) and bytes(old[2]) == bytes(new[2])
    assert bytes(old[1]) != bytes(new[1])


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, J2K])
def test_bright_background_under_a_monochrome2_label(ts: str) -> None:
    """Raw or mislabelled images: the border decides which way "ink" goes, not the label.

    Without that, the bright background would be taken for anatomy and spots in the darker
    breast for text.
    """
    kwargs = dict(photometric="MONOCHROME1", burned_in_text=NAME, text_height=21,
                  rows=1024, cols=832)
    ds, truth = make_mammogram_with_truth(transfer_syntax=ts, **kwargs)  # type: ignore[arg-type]
    ds.PhotometricInterpretation = "MONOCHROME2"  # the label lies; pixels are bright-background
    decision = run(ds)
    assert decision.action == "blanked"
    after = decoded(ds, decision)[0]
    assert truth.pixels is not None and truth.text_mask is not None
    assert np.array_equal(after[truth.breast_mask], truth.pixels[truth.breast_mask])
    assert np.all(after[truth.text_mask] == 4095)  # filled with the background's end
    plain, _ptruth = make_mammogram_with_truth(photometric="MONOCHROME1", transfer_syntax=ts,
                                              rows=1024, cols=832)
    plain.PhotometricInterpretation = "MONOCHROME2"
    clean = run(plain)
    assert clean.action == "unchanged"
    if ts == J2K:
        assert clean.decode_count == 0
