"""Cheap checks of a received dataset's bytes, without decoding pixel data.

pydicom is tolerant by design (a truncated dataset reads as a shorter one), which is right for
reading but wrong for deciding whether to tell a sender "stored". ``check_structure`` walks the
element headers (recursing into undefined-length sequences and encapsulated pixel items) and
proves the bytes end exactly where the last element ends; only then are the identifying
attributes read with pydicom, stopping before Pixel Data.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from io import BytesIO

from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
             b"UV"}
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_MAX_DEPTH = 32


class Malformed(Exception):
    """The bytes are not a well-formed dataset (truncated, garbage, bad lengths)."""


@dataclass
class Header:
    sop_class_uid: str = field(default="", repr=False)
    sop_instance_uid: str = field(default="", repr=False)
    study_uid: str = field(default="", repr=False)
    series_uid: str = field(default="", repr=False)
    has_pixels: bool = False


def _walk(buf: memoryview, pos: int, end: int, implicit: bool, depth: int,
          until: int | None) -> tuple[int, int]:
    """Walk elements from ``pos``; returns (position after, offset of top-level Pixel Data)."""
    if depth > _MAX_DEPTH:
        raise Malformed("nesting too deep")
    last_tag = -1
    pixels = -1
    while pos < end:
        if pos + 8 > end:
            raise Malformed("element header truncated")
        group, elem = struct.unpack_from("<HH", buf, pos)
        tag = (group << 16) | elem
        if until is not None and tag == until:
            return pos + 8, pixels
        start = pos
        if tag in (_ITEM, _ITEM_END, _SEQ_END):
            raise Malformed("unexpected delimiter")
        if tag <= last_tag:
            raise Malformed("elements out of order")
        last_tag = tag
        vr = b""
        if implicit or group == 0xFFFE:
            (length,) = struct.unpack_from("<I", buf, pos + 4)
            pos += 8
        else:
            vr = bytes(buf[pos + 4: pos + 6])
            if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                raise Malformed("invalid VR")
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    raise Malformed("element header truncated")
                (length,) = struct.unpack_from("<I", buf, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from("<H", buf, pos + 6)
                pos += 8
        if depth == 0 and tag == _PIXEL_DATA:
            pixels = start
        if length == _UNDEFINED:
            if not implicit and vr not in (b"SQ", b"UN", b"OB", b"OW"):
                raise Malformed("undefined length on a non-sequence element")
            pos = _walk_items(buf, pos, end, implicit, depth + 1)
        else:
            if pos + length > end:
                raise Malformed("element value truncated")
            pos += length
    if until is not None:
        raise Malformed("missing delimiter")
    return pos, pixels


def _walk_items(buf: memoryview, pos: int, end: int, implicit: bool, depth: int) -> int:
    """Items of an undefined-length sequence or encapsulated pixel data, up to (FFFE,E0DD)."""
    while True:
        if pos + 8 > end:
            raise Malformed("sequence truncated")
        group, elem, length = struct.unpack_from("<HHI", buf, pos)
        tag = (group << 16) | elem
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise Malformed("expected an item")
        if length == _UNDEFINED:
            pos, _ = _walk(buf, pos, end, implicit, depth + 1, until=_ITEM_END)
        else:
            if pos + length > end:
                raise Malformed("item truncated")
            pos += length


def check_structure(data: bytes | memoryview, transfer_syntax: str) -> tuple[memoryview, int]:
    """Raise ``Malformed`` unless ``data`` is a complete dataset.

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
    end, pixels = _walk(buf, 0, len(buf), implicit, 0, until=None)
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
            stop_when=lambda tag, vr, length: tag >= _PIXEL_DATA,
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
