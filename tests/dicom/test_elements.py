"""The one element walker and the one Part 10 prefix builder (service/dicom/elements.py), used by
the C-STORE check (dataset_check.py) and the engine's reader (workers/deid/source.py)."""

from __future__ import annotations

import struct
from io import BytesIO

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from service.dicom.elements import (
    ITEM,
    PIXEL_DATA,
    PREAMBLE,
    SEQ_END,
    Malformed,
    element_header,
    part10_prefix,
    tag_text,
    walk,
    walk_items,
)


def _meta() -> FileMetaDataset:
    return create_file_meta(sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
                            sop_instance_uid=generate_uid(),
                            transfer_syntax=ExplicitVRLittleEndian)


def test_part10_prefix_is_what_pynetdicom_and_pydicom_write() -> None:
    meta = _meta()
    prefix = part10_prefix(meta)
    assert prefix[:132] == PREAMBLE and prefix[132:] == encode_file_meta(_copy(meta))
    ds = Dataset()
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    back = pydicom.dcmread(BytesIO(prefix + body.getvalue()))
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert "FileMetaInformationGroupLength" in back.file_meta


def _copy(meta: FileMetaDataset) -> FileMetaDataset:
    out = FileMetaDataset()
    for elem in meta:
        out.add(elem)
    return out


def test_element_header_both_byte_orders_and_vr_forms() -> None:
    short = struct.pack("<HH2sH", 0x0010, 0x0010, b"PN", 4) + b"AB^C"
    assert element_header(short, 0, len(short), implicit=False) == (0x00100010, b"PN", 4, 8)
    long_ = struct.pack(">HH2sxxI", 0x7FE0, 0x0010, b"OW", 2) + b"\x00\x01"
    assert element_header(long_, 0, len(long_), implicit=False, little=False) == (
        PIXEL_DATA, b"OW", 2, 12)
    implicit = struct.pack("<HHI", 0x0008, 0x0018, 6)
    assert element_header(implicit, 0, 8, implicit=True) == (0x00080018, b"", 6, 8)
    with pytest.raises(Malformed) as cut:
        element_header(long_[:10], 0, 10, implicit=False, little=False)
    assert cut.value.truncated


def test_fragments_must_have_a_defined_length() -> None:
    undefined = struct.pack("<HHI", ITEM >> 16, ITEM & 0xFFFF, 0xFFFFFFFF)
    delim = struct.pack("<HHI", SEQ_END >> 16, SEQ_END & 0xFFFF, 0)
    with pytest.raises(Malformed) as exc:
        walk_items(undefined + delim, 0, 16, implicit=False, fragments=True)
    assert not exc.value.truncated
    frag = struct.pack("<HHI", ITEM >> 16, ITEM & 0xFFFF, 4) + b"\xff\xd8\xff\xd9"
    assert walk_items(frag + delim, 0, 20, implicit=False, fragments=True) == 20
    with pytest.raises(Malformed) as exc:
        walk_items(frag, 0, 12, implicit=False, fragments=True)  # no delimiter
    assert exc.value.truncated


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"])
def test_walker_finds_the_pixel_element_where_pydicom_stops(name: str) -> None:
    raw = open(str(get_testdata_file(name)), "rb").read()  # noqa: SIM115 - small test file
    fp = BytesIO(raw)
    read_preamble(fp, False)
    _read_file_meta_info(fp)
    body = fp.tell()
    stop = BytesIO(raw)
    pydicom.dcmread(stop, stop_before_pixels=True)
    end, pixels = walk(raw, body, len(raw), implicit=False)
    assert end == len(raw) and pixels == stop.tell() > body


def test_tag_text() -> None:
    assert tag_text(0x7FE00010) == "(7FE0,0010)" and tag_text(0x00091001) == "(0009,1001)"
