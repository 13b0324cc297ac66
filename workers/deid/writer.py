"""Writing a de-identified instance: durable, and without copying unchanged pixels through Python.

The file is preamble + new file meta + the header elements before the pixel data + the pixel
element + any elements after it. When the pixel stage left the pixels unchanged, the pixel
element's bytes are copied kernel-side from the source file (copy_file_range, else sendfile),
after checking that the source has not changed since it was read; a blanked image gets a new
element built by hand around the new value. The write goes to a temporary file in the
destination folder, is fsynced and renamed into place, and the folder is fsynced.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from service.core.errors import PixelRefused, PolicyRefused
from service.core.fsync import fsync_dir
from service.dicom.elements import PIXEL_DATA, SEQ_END, UNDEFINED_LENGTH, part10_prefix
from workers.deid.outcome import DeidOutcome
from workers.deid.source import Source


def write_outcome(outcome: DeidOutcome, dest: Path) -> None:
    """Durable write: temp file in the destination folder, fsync, atomic rename, fsync dir."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = outcome.source
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.tmp"
    try:
        with tmp.open("wb") as out:
            for chunk in _chunks(outcome, src):
                if isinstance(chunk, _Copy):
                    _copy_range(chunk, out)
                else:
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(dest.parent)


def _chunks(outcome: DeidOutcome, src: Source | None) -> Iterator[bytes | _Copy]:
    """The output file in order: bytes to write, or a range of the source file to copy."""
    ds = outcome.dataset
    meta = ds.file_meta
    ts = UID(meta.TransferSyntaxUID)
    pixel = outcome.pixel
    span = src.pixel if src is not None else None
    pixel_tag = span.tag if span is not None else PIXEL_DATA
    before, after = Dataset(), Dataset()
    reencoded = pixel is not None and pixel.action == "blanked"
    for elem in ds.elements():
        if reencoded and int(elem.tag) in _OFFSET_TABLES:
            continue  # offsets into the old fragments would point into the new ones
        (before if int(elem.tag) < pixel_tag else after)[elem.tag] = elem  # type: ignore[index]
    before.set_original_encoding(ts.is_implicit_VR, ts.is_little_endian,
                                 ds.get("SpecificCharacterSet"))
    yield part10_prefix(meta) + _encode_ds(before, ts)
    if pixel is not None and pixel.action == "blanked":
        if pixel.new_pixel_data is None:
            raise PixelRefused("pixel stage blanked but returned no pixel data")
        bits = int(ds.get("BitsAllocated", 16))
        vr = "OB" if ts.is_compressed or bits <= 8 else "OW"
        if ts.is_little_endian:
            # Hand-built element header, then the value itself: a 27 MB value must not be
            # copied through a Dataset, DicomBytesIO and getvalue() on its way to disk.
            yield from _pixel_element(pixel_tag, vr, pixel.new_pixel_data, ts)
        else:
            px = Dataset()
            px[pixel_tag] = DataElement(  # type: ignore[index]
                pixel_tag, vr, pixel.new_pixel_data, is_undefined_length=ts.is_compressed
            )
            yield _encode_ds(px, ts)
    elif pixel is not None and pixel.action != "no-pixels":
        if src is None or span is None:
            raise PolicyRefused("the source file is needed to copy the pixel data",
                                code="no-source")
        try:
            st = src.path.stat()
        except FileNotFoundError:
            raise PolicyRefused("source file vanished before the write",
                                code="no-source") from None
        if (st.st_size, st.st_mtime_ns) != (src.size, src.mtime_ns):
            raise PolicyRefused("source file changed between reading and writing",
                                code="source-changed")
        yield _Copy(src.path, span.start, span.end - span.start)
    if len(after):
        yield _encode_ds(after, ts)


@dataclass(frozen=True)
class _Copy:
    path: Path
    offset: int
    length: int


_OFFSET_TABLES = {0x7FE00001, 0x7FE00002}  # Extended Offset Table and its lengths


def _encode_ds(ds: Dataset, ts: UID) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = ts.is_implicit_VR
    fp.is_little_endian = ts.is_little_endian
    write_dataset(fp, ds)
    return fp.getvalue()


_SEQ_DELIMITER = struct.pack("<HHI", SEQ_END >> 16, SEQ_END & 0xFFFF, 0)  # little endian


def _pixel_element(tag: int, vr: str, value: bytes, ts: UID) -> Iterator[bytes]:
    """(7FE0,0010) in a little-endian syntax: header, value, and for encapsulated data the
    sequence delimiter (the pixel stage returns fragments without it, as encapsulate() does)."""
    undefined = ts.is_compressed
    if len(value) % 2 and not undefined:
        value = value + b"\x00"
    length = UNDEFINED_LENGTH if undefined else len(value)
    grp_elem = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if ts.is_implicit_VR:
        yield grp_elem + struct.pack("<I", length)
    else:
        yield grp_elem + vr.encode("ascii") + b"\x00\x00" + struct.pack("<I", length)
    yield value
    if undefined:
        yield _SEQ_DELIMITER


def _copy_range(c: _Copy, out: Any) -> None:
    """Kernel-side copy of the original pixel element (copy_file_range, else sendfile/copy)."""
    with c.path.open("rb") as f:
        out.flush()
        remaining, off = c.length, c.offset
        dst = out.fileno()
        try:
            while remaining:
                n = os.copy_file_range(f.fileno(), dst, remaining, off)
                if n == 0:
                    raise PolicyRefused("source shrank while copying pixel data", code="io")
                remaining -= n
                off += n
        except OSError:
            # copy_file_range fails across filesystems (EXDEV): sendfile stays in the kernel.
            with contextlib.suppress(OSError):
                while remaining:
                    n = os.sendfile(dst, f.fileno(), off, remaining)
                    if n == 0:
                        break
                    remaining -= n
                    off += n
            f.seek(off)
            while remaining:
                buf = f.read(min(remaining, 1 << 20))
                if not buf:
                    raise PolicyRefused("source shrank while copying pixel data",
                                        code="io") from None
                out.write(buf)
                remaining -= len(buf)
        out.flush()
