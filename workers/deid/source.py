"""Reading an instance without loading its pixel data, and remembering where the pixels are.

The header is parsed by pydicom up to the top-level pixel element; that element's position and
length are recorded so the writer can copy its bytes straight from the source file (no decode,
no copy through Python objects) when the pixel stage leaves them unchanged. Elements after the
pixel data (private groups 7FE1+, digital signatures, trailing padding) are parsed too: PHI hides
there as well.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from service.core.errors import NotDicom, PolicyRefused, Truncated, transient
from service.dicom.elements import (
    PIXEL_TAGS,
    SEQ_END,
    UNDEFINED_LENGTH,
    Malformed,
    element_header,
    read_tag,
    walk_items,
)


@dataclass(frozen=True)
class PixelSpan:
    """Where the top-level pixel element sits in the source file (byte offsets)."""

    tag: int
    vr: str
    start: int  # first byte of the element header
    value_start: int
    value_end: int  # end of the value (before a sequence delimiter, if any)
    end: int  # first byte after the element (after the delimiter, if any)
    undefined_length: bool


@dataclass
class Source:
    path: Path
    dataset: Dataset  # header without pixel data, file meta attached as .file_meta
    transfer_syntax: UID
    implicit_vr: bool
    little_endian: bool
    pixel: PixelSpan | None
    size: int
    mtime_ns: int = 0


def read_source(path: Path) -> Source:
    """Parse the header; raise NotDicom / Truncated / PolicyRefused for what cannot be read."""
    st = path.stat()
    size = st.st_size
    try:
        with path.open("rb") as f:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except InvalidDicomError:
                raise NotDicom("no DICOM Part 10 header (preamble + DICM)") from None
            except (EOFError, struct.error):
                raise Truncated("file ends inside the header") from None
            meta = getattr(ds, "file_meta", None)
            ts = meta.get("TransferSyntaxUID") if meta is not None else None
            if not ts:
                raise NotDicom("file meta has no TransferSyntaxUID")
            ts = UID(str(ts))
            if ts.is_deflated:
                raise PolicyRefused("deflated transfer syntax is not supported", code="deflated")
            implicit, little = ts.is_implicit_VR, ts.is_little_endian
            pos = f.tell()
            _check_complete(ds, f, pos, little)
            pixel = _pixel_span(f, pos, implicit, little, size) if pos + 4 <= size else None
            if pixel is not None:
                f.seek(pixel.end)
                if pixel.end < size:
                    trailing = read_dataset(f, implicit, little, bytelength=None)
                    _check_complete(trailing, f, size, little)
                    for elem_ in trailing.elements():
                        ds[elem_.tag] = elem_  # type: ignore[index]
            if not len(ds):
                raise Truncated("file ends after the file meta information")
            if pixel is None and _needs_pixels(ds, meta):
                raise Truncated("image instance without pixel data (file cut short?)")
            return Source(path, ds, ts, implicit, little, pixel, size, st.st_mtime_ns)
    except (NotDicom, Truncated, PolicyRefused):
        raise
    except (EOFError, struct.error):
        raise Truncated("file ends inside the data set") from None
    except OSError as exc:
        if transient(exc):  # a disk error or a full machine: retried, the input is not refused
            raise
        raise NotDicom(f"unreadable DICOM data set ({type(exc).__name__})") from None
    except (ValueError, KeyError, TypeError, NotImplementedError) as exc:
        raise NotDicom(f"unreadable DICOM data set ({type(exc).__name__})") from None


def _needs_pixels(ds: Dataset, meta: Dataset | None) -> bool:
    """An image SOP class or Image Pixel module attributes without pixel data: a cut file."""
    hint = meta.get("MediaStorageSOPClassUID", "") if meta is not None else ""
    sop = str(ds.get("SOPClassUID", "") or hint or "")
    name = UID(sop).name if sop else ""
    return "Image Storage" in name or "BitsAllocated" in ds


def _check_complete(ds: Dataset, f: BinaryIO, end: int, little: bool) -> None:
    """pydicom stops quietly at the end of a cut file; the last element tells whether it did.

    Elements are read in file order, so if the last one is whole, every one before it is.
    """
    keys = list(ds.keys())
    if not keys:
        return
    raw = ds.get_item(keys[-1])
    if not isinstance(raw, RawDataElement):
        return
    if raw.length == UNDEFINED_LENGTH:
        here = f.tell()
        f.seek(max(end - 8, 0))
        tail = f.read(8)
        f.seek(here)
        delimiter = struct.pack("<HHL" if little else ">HHL", SEQ_END >> 16, SEQ_END & 0xFFFF, 0)
        if tail != delimiter:
            raise Truncated("file ends inside a sequence")
        return
    if raw.value_tell + raw.length > end or (
        isinstance(raw.value, bytes) and len(raw.value) != raw.length
    ):
        raise Truncated("file ends inside the data set")


def _pixel_span(f: BinaryIO, pos: int, implicit: bool, little: bool,
                size: int) -> PixelSpan | None:
    """Where the top-level pixel element at ``pos`` ends (None: the next element is another).

    Walked on a map of the file: only the element header and, for encapsulated data, the item
    headers are touched, never the pixel bytes.
    """
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if read_tag(buf, pos, little=little) not in PIXEL_TAGS:
            return None
        try:
            tag, vr, length, value_start = element_header(buf, pos, size, implicit=implicit,
                                                          little=little)
        except Malformed:
            raise Truncated("file ends inside the pixel data element header") from None
        vr_text = vr.decode("ascii", "replace") if vr else "OW"
        if length == UNDEFINED_LENGTH:
            try:
                end = walk_items(buf, value_start, size, implicit=implicit, little=little,
                                 fragments=True)
            except Malformed as exc:
                if exc.truncated:
                    raise Truncated(f"encapsulated pixel data cut short ({exc})") from None
                raise PolicyRefused(f"encapsulated pixel data is malformed ({exc})",
                                    code="malformed") from None
            return PixelSpan(tag, vr_text, pos, value_start, end - 8, end, True)
    end = value_start + length
    if end > size:
        raise Truncated("pixel data runs past the end of the file")
    return PixelSpan(tag, vr_text, pos, value_start, end, end, False)


def map_pixels(src: Source) -> tuple[mmap.mmap | None, memoryview | None]:
    """A zero-copy view of the pixel value (the caller closes the map)."""
    if src.pixel is None or src.pixel.value_end <= src.pixel.value_start:
        return None, None
    with src.path.open("rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return mm, memoryview(mm)[src.pixel.value_start : src.pixel.value_end]
