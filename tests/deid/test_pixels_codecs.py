"""The cheap JPEG 2000 look is exact: the LL band rebuilt from the first packet equals what
OpenJPEG's own resolution reduction returns, and frames split without copying."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.encaps import encapsulate

from service.core.errors import PixelRefused
from synthetic.mammogram import make_mammogram_with_truth
from workers.deid import pixel_codecs
from workers.deid.pixels import clean_pixels
from workers.deid.policy_schema import PixelOptions

J2K = "1.2.840.10008.1.2.4.90"


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("rows,cols", [(512, 416), (1024, 832)])
def test_ll_band_from_first_packet_equals_openjpeg_reduction(photometric: str, rows: int,
                                                             cols: int) -> None:
    ds, _ = make_mammogram_with_truth(transfer_syntax=J2K, photometric=photometric, rows=rows,
                                      cols=cols, burned_in_text="ÅSE 17", text_height=20)
    (stream,) = pixel_codecs.split_frames(ds.PixelData, 1)
    info = pixel_codecs.j2k_info(stream)
    assert info.reversible and info.precision == 12 and info.levels == 5
    fast = pixel_codecs.ll_band_j2k(stream)
    assert fast is not None
    ll, levels = fast
    reference = pixel_codecs.reduced_j2k(stream, levels, info)
    assert reference is not None
    assert ll.shape == (-(-rows // 32), -(-cols // 32))
    assert np.array_equal(ll, reference)


def test_ll_band_of_an_odd_sized_image_follows_the_block_means() -> None:
    ds, truth = make_mammogram_with_truth(transfer_syntax=J2K, rows=600, cols=333)
    (stream,) = pixel_codecs.split_frames(ds.PixelData, 1)
    fast = pixel_codecs.ll_band_j2k(stream)
    assert fast is not None
    ll, levels = fast
    assert levels == 5 and ll.shape == (19, 11)
    assert truth.pixels is not None
    means = truth.pixels[:576, :320].reshape(18, 32, 10, 32).mean(axis=(1, 3))
    low = ll[:18, :10].astype(float)
    # The 5/3 low-pass is a smoothed mean with wider support: close inside, softer at edges.
    assert np.median(np.abs(low - means)) < 0.02 * 4095
    assert np.corrcoef(low.ravel(), means.ravel())[0, 1] > 0.9


def test_ll_band_declines_what_it_cannot_read() -> None:
    ds, _ = make_mammogram_with_truth(transfer_syntax=J2K)
    (stream,) = pixel_codecs.split_frames(ds.PixelData, 1)
    assert pixel_codecs.ll_band_j2k(bytes(stream[:100])) is None
    assert pixel_codecs.ll_band_j2k(b"\x00" * 64) is None


def test_single_small_glyph_in_jpeg2000_triggers_the_full_decode() -> None:
    ds, truth = make_mammogram_with_truth(transfer_syntax=J2K, burned_in_text="1",
                                          text_height=21, text_corner="bl")
    decision = clean_pixels(ds, ds.PixelData, transfer_syntax=J2K, options=PixelOptions())
    assert decision.action == "blanked" and decision.decode_count == 1
    (r0, c0, r1, c1), = truth.text_boxes
    box = decision.regions[0]
    assert box.row0 <= r0 and box.col0 <= c0 and box.row1 >= r1 and box.col1 >= c1


def test_split_frames_is_zero_copy_and_handles_fragments() -> None:
    one = encapsulate([b"\xff\x4f" + b"a" * 100])
    (frame,) = pixel_codecs.split_frames(memoryview(one), 1)
    assert isinstance(frame, memoryview) and bytes(frame[:2]) == b"\xff\x4f"
    three = encapsulate([b"x" * 10, b"y" * 12, b"z" * 14], has_bot=True)
    frames = [bytes(f) for f in pixel_codecs.split_frames(three, 3)]
    assert frames == [b"x" * 10, b"y" * 12, b"z" * 14]
    with pytest.raises(PixelRefused):
        pixel_codecs.split_frames(b"\x00" * 16, 1)
