"""Date shifting for DA and DT values, keeping each value's precision, fraction and UTC offset.

Dates move by a whole number of days per patient, so intervals between one woman's exams stay
exact. TM (time of day) values are left as they are: a whole-day shift does not move them, and a
time of day alone does not identify anyone; DT values keep their time part for the same reason.
Values that do not parse are emptied (they may hold free text and cannot be shifted safely).
"""

from __future__ import annotations

import datetime as dt
import re

_DA = re.compile(r"^(\d{4})(\d{2})?(\d{2})?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?$")


class BadDate(ValueError):
    """A value that is not a DICOM date; the caller empties it."""


def _shift_ymd(y: str, m: str | None, d: str | None, days: int) -> str:
    base = dt.date(int(y), int(m or 1), int(d or 1))
    try:
        new = base + dt.timedelta(days=days)
    except OverflowError:
        raise BadDate("shift leaves the calendar") from None
    out = f"{new.year:04d}"
    if m is not None:
        out += f"{new.month:02d}"
    if d is not None:
        out += f"{new.day:02d}"
    return out


def shift_da(value: str, days: int) -> str:
    v = value.strip()
    if not v:
        return v
    if "-" in v and len(v) > 8:  # a DA range "20200101-20200131"
        return "-".join(shift_da(p, days) if p else "" for p in v.split("-"))
    m = _DA.match(v)
    if not m:
        # ACR-NEMA style 2020.01.31
        if re.fullmatch(r"\d{4}\.\d{2}\.\d{2}", v):
            return shift_da(v.replace(".", ""), days)
        raise BadDate("not a DA value")
    try:
        return _shift_ymd(m.group(1), m.group(2), m.group(3), days)
    except ValueError:
        raise BadDate("not a calendar date") from None


def shift_dt(value: str, days: int) -> str:
    v = value.strip()
    if not v:
        return v
    m = _DT.match(v)
    if not m:
        raise BadDate("not a DT value")
    try:
        head = _shift_ymd(m.group(1), m.group(2), m.group(3), days)
    except ValueError:
        raise BadDate("not a calendar date") from None
    return head + (m.group(4) or "") + (m.group(5) or "")
