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

__all__ = ["MAX_INFLATED_BYTES", "Header", "Malformed", "check_structure", "inflate",
           "read_header"]

#: Default cap on a deflated data set's inflated size. zlib inflates up to ~1000:1, so a 1 MB
#: C-STORE can stand for a gigabyte; this runs on the association thread, before any refusal.
MAX_INFLATED_BYTES = 256 << 20
_CHUNK = 1 << 20


@dataclass
class Header:
    sop_class_uid: str = field(default="", repr=False)
    sop_instance_uid: str = field(default="", repr=False)
    study_uid: str = field(default="", repr=False)
    series_uid: str = field(default="", repr=False)
    has_pixels: bool = False


def inflate(data: bytes | memoryview, max_bytes: int = MAX_INFLATED_BYTES) -> bytes:
    """Inflate a Deflated Explicit VR Little Endian data set, never past ``max_bytes``.

    Fed in 1 MiB pieces with ``max_length``, so memory stays near the cap whatever the ratio
    (a deflate bomb is refused as soon as it passes the cap, not after it has filled memory)."""
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    view = memoryview(data)
    try:
        for i in range(0, max(len(view), 1), _CHUNK):
            piece: bytes | memoryview = view[i:i + _CHUNK]
            while piece:
                out += d.decompress(piece, max_bytes + 1 - len(out))
                if len(out) > max_bytes:
                    raise Malformed(f"deflated data set inflates past the cap of {max_bytes} "
                                    "bytes (inflate-cap)")
                piece = d.unconsumed_tail
        out += d.flush()
    except zlib.error:
        raise Malformed("deflated stream invalid") from None
    if len(out) > max_bytes:
        raise Malformed(f"deflated data set inflates past the cap of {max_bytes} bytes "
                        "(inflate-cap)")
    return bytes(out)


def check_structure(data: bytes | memoryview, transfer_syntax: str, *,
                    max_inflated: int = MAX_INFLATED_BYTES) -> tuple[memoryview, int]:
    """Raise ``Malformed`` unless ``data`` is a complete data set.

    Returns the plain (inflated) bytes and the offset of Pixel Data (-1 when absent).
    """
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        data = inflate(data, max_inflated)
    buf = memoryview(data)
    if len(buf) == 0:
        raise Malformed("empty dataset")
    implicit = transfer_syntax == ImplicitVRLittleEndian
    end, pixels = walk(buf, 0, len(buf), implicit=implicit)
    if end != len(buf):
        raise Malformed("trailing bytes")
    return buf, pixels


def read_header(data: bytes | memoryview, transfer_syntax: str, *,
                max_inflated: int = MAX_INFLATED_BYTES) -> Header:
    """Structure check, then the identifying UIDs (pixel data is neither read nor decoded)."""
    plain, pixels = check_structure(data, transfer_syntax, max_inflated=max_inflated)
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
