"""The receive-side structure check: complete datasets pass in every accepted syntax; truncated
or garbage bytes are caught (pydicom alone would read them as shorter datasets)."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filereader import _read_file_meta_info, read_preamble

from service.dicom.dataset_check import Malformed, check_structure, read_header

FILES = ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_jp2klossless.dcm",
         "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "rtplan.dcm",
         "reportsi.dcm", "nested_priv_SQ.dcm", "SC_rgb_jpeg_dcmtk.dcm"]


def _dataset_bytes(name: str) -> tuple[bytes, str, Any]:
    path = str(get_testdata_file(name))
    raw = open(path, "rb").read()  # noqa: SIM115 - tiny test file
    fp = io.BytesIO(raw)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    return raw[fp.tell():], str(meta.TransferSyntaxUID), dcmread(path)


@pytest.mark.parametrize("name", FILES)
def test_complete_datasets_pass_and_uids_are_read(name: str) -> None:
    data, ts, ds = _dataset_bytes(name)
    h = read_header(data, ts)
    assert h.sop_class_uid == str(ds.get("SOPClassUID", ""))
    assert h.sop_instance_uid == str(ds.get("SOPInstanceUID", ""))
    assert h.has_pixels == ("PixelData" in ds)
    assert not h.sop_instance_uid or h.sop_instance_uid not in repr(h)


@pytest.mark.parametrize("name", FILES)
def test_truncated_datasets_are_malformed(name: str) -> None:
    data, ts, _ = _dataset_bytes(name)
    for cut in (len(data) - 1, len(data) - 7, len(data) // 2, 10):
        with pytest.raises(Malformed):
            check_structure(data[:cut], ts)


def test_garbage_and_empty_are_malformed() -> None:
    with pytest.raises(Malformed):
        check_structure(b"", "1.2.840.10008.1.2.1")
    rng = os.urandom(4096)
    for ts in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):
        with pytest.raises(Malformed):
            check_structure(rng, ts)
