"""Thumbnails of de-identified views, rendered on the server from the output folder.

The pixels go through the scorer's own display steps (``workers.score.preprocess.thumbnail``:
decode any supported transfer syntax, modality LUT, the header's VOI LUT or window with a
percentile fallback, MONOCHROME1 inverted), so staff see a view the way the model's
preprocessing read it, with tissue bright for every vendor. Nothing is cropped or flipped.

Only files under the output folder are read: the path stored in a score result is relative to
it and is refused when it would leave it. Rendered PNGs are kept in a small in-process cache
keyed by the file's path, size and modification time, so paging through a worklist does not
decode a full-field mammogram again for every request.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import pydicom
from PIL import Image

from service.core.errors import DeidgateError
from workers.score.card import Preprocessing
from workers.score.preprocess import thumbnail

MAX_SIDE = 320


class ThumbnailUnavailable(DeidgateError):
    code = "thumbnail-unavailable"


def view_file(output_dir: Path, relative: str | None) -> Path:
    """The view's file inside ``output_dir``, or ``ThumbnailUnavailable``."""
    if not relative:
        raise ThumbnailUnavailable("the score result names no file for this view")
    root = output_dir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or path.suffix.lower() != ".dcm":
        raise ThumbnailUnavailable("the view's file is outside the output folder")
    if not path.is_file():
        raise ThumbnailUnavailable("the view's de-identified file is no longer in the output "
                                   "folder")
    return path


@lru_cache(maxsize=64)
def _render(path: str, size: int, mtime_ns: int, max_side: int) -> bytes:
    del size, mtime_ns  # cache key only: a replaced file is rendered again
    try:
        ds = pydicom.dcmread(path)
        pixels = thumbnail(ds, Preprocessing(), max_side=max_side)
    except DeidgateError as exc:
        raise ThumbnailUnavailable(exc.reason) from None
    except Exception as exc:  # unreadable file: say what kind, never a value
        raise ThumbnailUnavailable(f"the view cannot be read ({type(exc).__name__})") from None
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def render_png(path: Path, *, max_side: int = MAX_SIDE) -> bytes:
    """PNG bytes (8-bit grey, longest side at most ``max_side``)."""
    st = path.stat()
    return _render(str(path), st.st_size, st.st_mtime_ns, max_side)
