"""Deflated data at the edge (issue 7, section 7): a deflate bomb is refused once its inflated
size passes the cap, with memory held near the cap, never inflated unbounded on the
association thread; a deflated data set under the cap is still stored as it came."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from service.core.keys import SiteKeys
from service.db.models.dicom import ReceivedInstance
from service.db.session import session_scope
from service.dicom import admin
from service.dicom.dataset_check import Malformed, read_header
from service.dicom.listener import Listener

PDF = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF: no Pixel Data required
DEFLATED = "1.2.840.10008.1.2.1.99"
SOP = "1.2.826.0.1.3680043.10.999.1"


def _el(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"
    if vr in (b"OB", b"UN", b"SQ", b"UT", b"OW"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def deflate_bomb(inflated_mb: int) -> bytes:
    """A valid Encapsulated PDF data set whose document is ``inflated_mb`` MiB of zeros,
    deflated as it would arrive: about 1 KB on the wire per inflated MiB."""
    head = (_el(0x0008, 0x0016, b"UI", PDF.encode()) + _el(0x0008, 0x0018, b"UI", SOP.encode())
            + _el(0x0020, 0x000D, b"UI", b"1.2.3.4") + _el(0x0020, 0x000E, b"UI", b"1.2.3.4.5"))
    size = inflated_mb << 20
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [c.compress(head + struct.pack("<HH2sHI", 0x0042, 0x0011, b"OB", 0, size))]
    zeros = bytes(1 << 20)
    for _ in range(inflated_mb):
        out.append(c.compress(zeros))
    out.append(c.flush())
    return b"".join(out)


def test_deflate_bomb_is_refused_with_memory_near_the_cap() -> None:
    bomb = deflate_bomb(512)  # 512 MiB inflated from about half a megabyte
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(Malformed, match="inflate-cap"):
            read_header(bomb, DEFLATED, max_inflated=8 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"peak {peak >> 20} MiB while refusing a bomb with an 8 MiB cap"


def test_deflated_under_the_cap_reads() -> None:
    h = read_header(deflate_bomb(2), DEFLATED, max_inflated=8 << 20)
    assert (h.sop_class_uid, h.sop_instance_uid) == (PDF, SOP)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_listener_refuses_a_deflate_bomb_and_stores_a_small_deflated_set(
        sqlite_db: str, site_keys: SiteKeys, tmp_path: Path,
        start_listener: Callable[..., Listener]) -> None:
    from tests.peers import faults

    listener = start_listener(sqlite_db, site_keys, tmp_path / "spool",
                              max_inflated_bytes=16 << 20)
    with session_scope(sqlite_db) as s:
        admin.allow(s, "FAULTY")
    kw = {"sop_class": PDF, "sop_instance": SOP, "ts": DEFLATED, "tmp": tmp_path}
    assert faults.send_raw(listener.port, deflate_bomb(256), **kw) == 0xC000
    assert list((tmp_path / "spool").glob("*.dcm")) == []
    assert faults.send_raw(listener.port, deflate_bomb(4), **kw) == 0x0000
    with session_scope(sqlite_db) as s:
        rows = list(s.scalars(select(ReceivedInstance)))
    assert [r.transfer_syntax for r in rows] == [DEFLATED]
