"""DICOM data elements as bytes: the constants, the one element walker, the Part 10 prefix.

pydicom is tolerant by design (a truncated data set reads as a shorter one). Two places must not
be: the C-STORE handler, which may only answer "stored" for a complete data set
(dataset_check.py), and the engine, which must know exactly where the pixel element starts and
ends so it can copy those bytes unchanged (workers/deid/source.py). Both walk element headers
here, on any buffer (bytes, memoryview, mmap), without decoding a value. Nothing here imports
from the project, so both the DICOM edge and the engine can use it.
"""

from __future__ import annotations

import mmap
import struct

from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info

# Explicit VR encodings with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                      b"UR", b"UT", b"UV"})
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
PIXEL_TAGS = (0x7FE00008, 0x7FE00009, PIXEL_DATA)  # Float, Double Float and (plain) Pixel Data
PREAMBLE = b"\x00" * 128 + b"DICM"
MAX_DEPTH = 32
_DELIMITERS = (ITEM, ITEM_END, SEQ_END)

# What the walker reads: a received data set (bytes, memoryview) or a mapped file.
Buffer = bytes | bytearray | memoryview | mmap.mmap

# Undefined length is legal on sequences and on encapsulated (or unknown-VR) pixel data only.
_UNDEFINED_OK = (b"SQ", b"UN", b"OB", b"OW")

_TAG = {True: struct.Struct("<HH"), False: struct.Struct(">HH")}
_U32 = {True: struct.Struct("<I"), False: struct.Struct(">I")}
_U16 = {True: struct.Struct("<H"), False: struct.Struct(">H")}
_ITEM_HEADER = {True: struct.Struct("<HHI"), False: struct.Struct(">HHI")}


class Malformed(Exception):
    """The bytes are not a well-formed data set (truncated, garbage, bad lengths).

    ``truncated`` is True when the bytes simply end too early (a cut file, a short transfer).
    Messages name positions and structure, never a value.
    """

    def __init__(self, reason: str, *, truncated: bool = False) -> None:
        super().__init__(reason)
        self.truncated = truncated


def tag_text(tag: int) -> str:
    """``(GGGG,EEEE)``: how reports, logs and explain output name a tag."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def part10_prefix(file_meta: FileMetaDataset) -> bytes:
    """Preamble, "DICM" and the encoded file meta group: everything a file holds before its data
    set. Group length, version and implementation identity are filled in where missing."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(PREAMBLE)
    write_file_meta_info(fp, file_meta, enforce_standard=True)
    return fp.getvalue()


def read_tag(buf: Buffer, pos: int, *, little: bool = True) -> int:
    group, elem = _TAG[little].unpack_from(buf, pos)
    return int((group << 16) | elem)


def element_header(buf: Buffer, pos: int, end: int, *, implicit: bool,
                   little: bool = True) -> tuple[int, bytes, int, int]:
    """(tag, vr, length, value_start) of the element at ``pos``; vr is b"" in implicit VR and
    for items and delimiters. Only the header's own size is checked here (the VR's letters and
    the value's length are the walker's business)."""
    if pos + 8 > end:
        raise Malformed("element header truncated", truncated=True)
    tag = read_tag(buf, pos, little=little)
    if implicit or tag >> 16 == 0xFFFE:
        return tag, b"", _U32[little].unpack_from(buf, pos + 4)[0], pos + 8
    vr = bytes(buf[pos + 4 : pos + 6])
    if vr in LONG_VRS:
        if pos + 12 > end:
            raise Malformed("element header truncated", truncated=True)
        return tag, vr, _U32[little].unpack_from(buf, pos + 8)[0], pos + 12
    return tag, vr, _U16[little].unpack_from(buf, pos + 6)[0], pos + 8


def walk(buf: Buffer, pos: int, end: int, *, implicit: bool, little: bool = True,
         depth: int = 0, until: int | None = None) -> tuple[int, int]:
    """Walk elements from ``pos``, recursing into undefined-length values.

    Returns (position after the last element, offset of the top-level Pixel Data or -1). With
    ``until`` (an item's delimiter) the walk ends after that tag. Raises ``Malformed`` unless
    every element is whole, in ascending tag order, with a valid VR.
    """
    if depth > MAX_DEPTH:
        raise Malformed("nesting too deep")
    last_tag = -1
    pixels = -1
    while pos < end:
        if pos + 8 > end:
            raise Malformed("element header truncated", truncated=True)
        tag = read_tag(buf, pos, little=little)
        if until is not None and tag == until:
            return pos + 8, pixels
        if tag in _DELIMITERS:
            raise Malformed("unexpected delimiter")
        if tag <= last_tag:
            raise Malformed("elements out of order")
        last_tag = tag
        start = pos
        _, vr, length, pos = element_header(buf, pos, end, implicit=implicit, little=little)
        if vr and not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise Malformed("invalid VR")
        if depth == 0 and tag == PIXEL_DATA:
            pixels = start
        if length == UNDEFINED_LENGTH:
            if not implicit and vr not in _UNDEFINED_OK:
                raise Malformed("undefined length on a non-sequence element")
            pos = walk_items(buf, pos, end, implicit=implicit, little=little, depth=depth + 1)
        else:
            if pos + length > end:
                raise Malformed("element value truncated", truncated=True)
            pos += length
    if until is not None:
        raise Malformed("missing delimiter", truncated=True)
    return pos, pixels


def walk_items(buf: Buffer, pos: int, end: int, *, implicit: bool, little: bool = True,
               depth: int = 0, fragments: bool = False) -> int:
    """Items of an undefined-length sequence or encapsulated pixel data, up to and including
    (FFFE,E0DD); returns the position after it. ``fragments``: the items are pixel data
    fragments, which always have a defined length (PS3.5 A.4)."""
    header = _ITEM_HEADER[little]
    while True:
        if pos + 8 > end:
            raise Malformed("sequence truncated", truncated=True)
        group, elem, length = header.unpack_from(buf, pos)
        tag = (group << 16) | elem
        pos += 8
        if tag == SEQ_END:
            return pos
        if tag != ITEM:
            raise Malformed("expected an item")
        if length == UNDEFINED_LENGTH:
            if fragments:
                raise Malformed("pixel data fragment of undefined length")
            pos, _ = walk(buf, pos, end, implicit=implicit, little=little, depth=depth + 1,
                          until=ITEM_END)
        else:
            if pos + length > end:
                raise Malformed("item truncated", truncated=True)
            pos += length
