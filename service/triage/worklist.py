"""The ranked worklist: what screening staff read first, and why.

Order (one SQL ``ORDER BY``, so every page is a slice of the same list):

1. exams **over the ceiling** (unread, waiting longer than ``Settings.triage_max_wait_minutes``),
   longest wait first, whatever their score: in published worklist prioritisation the mean
   turnaround of urgent cases fell but the longest waits grew; the ceiling bounds them;
2. then by score, highest first; equal scores by who has waited longest (``arrived_at``), then
   by row id, so ties never swap between two requests.

Paging is stable: a page is computed "as of" one instant (``as_of``, returned with every page,
passed back for the next one). Exams that arrived after it are left out and the ceiling and the
read state are judged at that instant, so a list read page by page neither repeats nor skips an
exam while new ones arrive or others are read.

Time waiting counts from ``arrived_at`` (the exam's last view de-identified), not from scoring;
for a read exam it stops at ``read_at``. Category and the model identity are shown as the
scoring worker stored them (the card's thresholds at scoring time), never recomputed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from service.db.base import as_utc, utcnow
from service.db.models.triage import CATEGORIES, ScoreResult, TriageEntry

State = Literal["unread", "read"]
# Radiology hanging order: right before left, CC before MLO; other views after, by name.
_VIEW_ORDER = {("R", "CC"): 0, ("L", "CC"): 1, ("R", "MLO"): 2, ("L", "MLO"): 3}
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class View:
    """One scored view: pseudonymous UIDs, its score, and its file under the output folder."""

    sop: str
    series: str
    laterality: str
    view: str
    score: float | None
    file: str | None


@dataclass(frozen=True)
class ExamRow:
    """One exam of the worklist (pseudonyms only). Model fields are None for a row written
    before score results were kept (it has no result to point at)."""

    exam: str
    patient_pseudonym: str
    score: float
    category: str
    model_name: str | None
    model_version: str
    model_sha256: str | None
    device_uid: str | None
    preprocessing_version: str | None
    demo: bool
    complete: bool | None
    note: str | None
    views: tuple[View, ...]
    scored_at: datetime
    arrived_at: datetime
    read_at: datetime | None
    read_by: str | None
    has_accession: bool
    waiting_s: int
    over_ceiling: bool
    rank: int | None = None

    @property
    def state(self) -> State:
        return "unread" if self.read_at is None else "read"


@dataclass(frozen=True)
class Filters:
    """``date_from``/``date_to``: UTC days of arrival, both inclusive (a range that runs
    backwards matches nothing). ``unread_only``: exams nobody has marked read."""

    category: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    unread_only: bool = False

    def __post_init__(self) -> None:
        if self.category is not None and self.category not in CATEGORIES:
            raise ValueError(f"category must be one of {', '.join(CATEGORIES)}")


@dataclass(frozen=True)
class Page:
    items: list[ExamRow]
    total: int
    over_ceiling_total: int
    limit: int
    offset: int
    as_of: datetime
    ceiling: timedelta
    filters: Filters = field(default_factory=Filters)


def instant(value: datetime | None) -> datetime:
    """``value`` in UTC (now when None); the ends of the calendar clamp instead of overflowing,
    so a far-off ``as_of`` a client sends is an empty or full list, never an error."""
    if value is None:
        return utcnow()
    try:
        return as_utc(value).astimezone(UTC)
    except OverflowError:
        return _EARLIEST if value.year <= 1 else _LATEST


def _minus(at: datetime, delta: timedelta) -> datetime:
    try:
        return at - delta
    except OverflowError:
        return _EARLIEST


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def _filters(f: Filters, as_of: datetime) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [TriageEntry.arrived_at <= as_of]
    if f.category is not None:
        where.append(TriageEntry.category == f.category)
    if f.date_from is not None:
        where.append(TriageEntry.arrived_at >= _day_start(f.date_from))
    if f.date_to is not None and f.date_to < date.max:
        where.append(TriageEntry.arrived_at < _day_start(f.date_to + timedelta(days=1)))
    if f.unread_only:
        where.append(TriageEntry.read_at.is_(None))
    return where


def _over(as_of: datetime, ceiling: timedelta) -> ColumnElement[bool]:
    """Unread at ``as_of`` and waiting longer than ``ceiling`` (strictly)."""
    unread = or_(TriageEntry.read_at.is_(None), TriageEntry.read_at > as_of)
    return and_(unread, TriageEntry.arrived_at < _minus(as_of, ceiling))


def _views(raw: Any) -> tuple[View, ...]:
    """The result's views as stored by the scoring worker; malformed entries are skipped."""
    out: list[View] = []
    for v in raw if isinstance(raw, list) else ():
        if not isinstance(v, dict) or not isinstance(v.get("sop"), str):
            continue
        score = v.get("score")
        file = v.get("file")
        out.append(View(sop=v["sop"], series=str(v.get("series", "")),
                        laterality=str(v.get("laterality", "")), view=str(v.get("view", "")),
                        score=float(score) if isinstance(score, int | float) else None,
                        file=file if isinstance(file, str) else None))
    out.sort(key=lambda v: (_VIEW_ORDER.get((v.laterality, v.view), 9), v.laterality, v.view,
                            v.sop))
    return tuple(out)


def _row(entry: TriageEntry, result: ScoreResult | None, *, as_of: datetime,
         ceiling: timedelta, rank: int | None) -> ExamRow:
    arrived = entry.arrived_at or entry.scored_at
    read_at = entry.read_at
    read_then = read_at is not None and read_at <= as_of
    end = read_at if read_then and read_at is not None else as_of
    waiting = max(0, int((end - arrived).total_seconds()))
    return ExamRow(
        exam=entry.exam, patient_pseudonym=entry.patient_pseudonym, score=entry.score,
        category=entry.category,
        model_name=result.model_name if result else None,
        model_version=entry.model_version,
        model_sha256=result.model_sha256 if result else None,
        device_uid=result.device_uid if result else None,
        preprocessing_version=result.preprocessing_version if result else None,
        demo=bool(result.demo) if result else False,
        complete=result.complete if result else None,
        note=result.note if result else None,
        views=_views(result.views) if result else (),
        scored_at=entry.scored_at, arrived_at=arrived, read_at=read_at, read_by=entry.read_by,
        has_accession=bool(entry.accession_pseudonym),
        waiting_s=waiting,
        over_ceiling=not read_then and arrived < _minus(as_of, ceiling),
        rank=rank,
    )


def worklist(session: Session, *, ceiling: timedelta, filters: Filters | None = None,
             limit: int = 100, offset: int = 0, as_of: datetime | None = None) -> Page:
    """One page of the ranked worklist (see the module docstring for the order)."""
    f = filters or Filters()
    at = instant(as_of)
    where = _filters(f, at)
    over = _over(at, ceiling)
    total = session.scalar(select(func.count()).select_from(TriageEntry).where(*where)) or 0
    over_total = session.scalar(
        select(func.count()).select_from(TriageEntry).where(*where, over)) or 0
    rows = session.execute(
        select(TriageEntry, ScoreResult)
        .outerjoin(ScoreResult, ScoreResult.id == TriageEntry.result_id)
        .where(*where)
        .order_by(case((over, 0), else_=1),
                  case((over, TriageEntry.arrived_at), else_=None).asc(),
                  TriageEntry.score.desc(), TriageEntry.arrived_at.asc(), TriageEntry.id.asc())
        .limit(limit)
        .offset(offset)
    ).all()
    items = [_row(e, r, as_of=at, ceiling=ceiling, rank=offset + i + 1)
             for i, (e, r) in enumerate(rows)]
    return Page(items=items, total=total, over_ceiling_total=over_total, limit=limit,
                offset=offset, as_of=at, ceiling=ceiling, filters=f)


def exam_detail(session: Session, exam: str, *, ceiling: timedelta,
                as_of: datetime | None = None) -> ExamRow | None:
    """One exam as the worklist shows it (no rank: that depends on the filters)."""
    found = session.execute(
        select(TriageEntry, ScoreResult)
        .outerjoin(ScoreResult, ScoreResult.id == TriageEntry.result_id)
        .where(TriageEntry.exam == exam)
    ).first()
    if found is None:
        return None
    entry, result = found
    return _row(entry, result, as_of=instant(as_of), ceiling=ceiling, rank=None)


def ceiling_of(minutes: int) -> timedelta:
    return timedelta(minutes=minutes)


def humanize(seconds: int) -> str:
    """``2 d 3 h``, ``5 h 12 min``, ``14 min``, ``under 1 min``: time waiting at a glance."""
    minutes = seconds // 60
    days, rem = divmod(minutes, 1440)
    hours, mins = divmod(rem, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    return f"{mins} min" if mins else "under 1 min"
