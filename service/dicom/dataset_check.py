"""Cheap checks of a received data set's bytes, without decoding pixel data.

pydicom is tolerant by design (a truncated data set reads as a shorter one), which is right for
reading but wrong for deciding whether to tell a sender "stored". ``check_structure`` walks the
element headers (elements.py: recursing into undefined-length sequences and encapsulated pixel
items) and proves the bytes end exactly where the last element ends; only then are the
identifying attributes read with pydicom, stopping before Pixel Data.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from io import BytesIO

from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from service.dicom.elements import PIXEL_DATA, Malformed, walk

__all__ = ["Header", "Malformed", "check_structure", "read_header"]


@dataclass
class Header:
    sop_class_uid: str = field(default="", repr=False)
    sop_instance_uid: str = field(default="", repr=False)
    study_uid: str = field(default="", repr=False)
    series_uid: str = field(default="", repr=False)
    has_pixels: bool = False


def check_structure(data: bytes | memoryview, transfer_syntax: str) -> tuple[memoryview, int]:
    """Raise ``Malformed`` unless ``data`` is a complete data set.

    Returns the plain (inflated) bytes and the offset of Pixel Data (-1 when absent).
    """
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        try:
            data = zlib.decompress(bytes(data), -zlib.MAX_WBITS)
        except zlib.error:
            raise Malformed("deflated stream invalid") from None
    buf = memoryview(data)
    if len(buf) == 0:
        raise Malformed("empty dataset")
    implicit = transfer_syntax == ImplicitVRLittleEndian
    end, pixels = walk(buf, 0, len(buf), implicit=implicit)
    if end != len(buf):
        raise Malformed("trailing bytes")
    return buf, pixels


def read_header(data: bytes | memoryview, transfer_syntax: str) -> Header:
    """Structure check, then the identifying UIDs (pixel data is neither read nor decoded)."""
    plain, pixels = check_structure(data, transfer_syntax)
    fp = BytesIO(bytes(plain[:pixels] if pixels >= 0 else plain))  # header bytes only
    try:
        ds = read_dataset(
            fp, transfer_syntax == ImplicitVRLittleEndian, True,
            stop_when=lambda tag, vr, length: tag >= PIXEL_DATA,
        )
        h = Header(
            sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
            sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
            study_uid=str(ds.get("StudyInstanceUID", "") or ""),
            series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
            has_pixels=pixels >= 0,
        )
    except Exception as exc:  # pydicom raises many types on garbage; all mean "cannot parse"
        raise Malformed(f"header unreadable ({type(exc).__name__})") from None
    return h
