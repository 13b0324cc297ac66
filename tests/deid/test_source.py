"""The engine's reader (workers/deid/source.py) on the shared element walker: where the pixel
element starts and ends in every byte order and encapsulation, and every cut file refused."""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from service.core.errors import NotDicom, PolicyRefused, Rejected, Truncated
from workers.deid.source import read_source

ENCAPSULATED = ["MR_small_RLE.dcm", "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm"]
NATIVE = ["MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"]


def _file(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


@pytest.mark.parametrize("name", [*ENCAPSULATED, *NATIVE])
def test_pixel_span_brackets_the_pixel_value(name: str) -> None:
    path = _file(name)
    raw = path.read_bytes()
    src = read_source(path)
    span = src.pixel
    assert span is not None and span.tag == 0x7FE00010
    whole = pydicom.dcmread(path)
    if name in ENCAPSULATED:
        assert span.undefined_length
        endian = "<" if src.little_endian else ">"
        assert raw[span.value_end:span.end] == struct.pack(endian + "HHI", 0xFFFE, 0xE0DD, 0)
        assert raw[span.value_start:span.value_end] == whole.PixelData  # fragments, no delimiter
    else:
        assert not span.undefined_length and span.value_end == span.end
        assert len(raw[span.value_start:span.value_end]) == len(whole.PixelData)
    assert "PixelData" not in src.dataset


@pytest.mark.parametrize("name", [*ENCAPSULATED, "MR_small_bigendian.dcm"])
def test_every_cut_is_refused(name: str, tmp_path: Path) -> None:
    raw = _file(name).read_bytes()
    span = read_source(_file(name)).pixel
    assert span is not None
    # every 53 bytes, and every byte around the pixel element header and its delimiter
    cuts = sorted({*range(0, len(raw) - 1, 53), *range(span.start - 2, span.value_start + 10),
                   *range(span.value_end - 4, span.end), len(raw) - 1})
    accepted = []
    for n in cuts:
        p = tmp_path / "cut.dcm"
        p.write_bytes(raw[:n])
        try:
            read_source(p)
        except Rejected as exc:
            assert isinstance(exc, (Truncated, NotDicom)), (n, exc)
        else:
            accepted.append(n)
    assert not accepted, accepted


def test_a_malformed_fragment_is_refused_not_truncated(tmp_path: Path) -> None:
    path = _file("MR_small_RLE.dcm")
    raw = bytearray(path.read_bytes())
    span = read_source(path).pixel
    assert span is not None
    struct.pack_into("<HH", raw, span.value_start, 0xFFFE, 0xE00D)  # an item end, not an item
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(bytes(raw))
    with pytest.raises(PolicyRefused) as exc:
        read_source(bad)
    assert exc.value.code == "malformed" and not isinstance(exc.value, Truncated)
