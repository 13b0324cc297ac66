"""The scores CSV: the one input format of ``deidgate model evaluate|simulate|monitor``.

One row per scored unit (usually one exam). Header names are fixed and lower-case::

    exam       pseudonymous study instance UID (required, non-empty)
    woman      patient pseudonym (required): the bootstrap resamples women, never rows
    score      the model's exam score, a finite number (required; or several ``score_<name>``
               columns, one per model, for a comparison on the same exams)
    label      1 = cancer (or "abnormal" by the site's reference standard), 0 = not (required
               for evaluate and simulate; optional for monitor)
    vendor     scanner manufacturer / model, free text (optional)
    age        whole years 0-130 (optional)
    density    BI-RADS breast density a, b, c or d (1-4 accepted and mapped) (optional)
    laterality L, R or B (optional; with ``view``, makes per-breast or per-view rows possible)
    view       CC, MLO, ... free text (optional)
    arrival    local wall-clock date-time, ISO 8601 without a UTC offset, for example
               2024-03-04T08:15:00 (optional; simulate's arrival pattern, monitor's ISO week)

A row's key is ``exam`` plus ``laterality`` and ``view`` when those columns exist; keys must be
unique. An empty optional cell means "not recorded". Unknown columns are refused, so a typo in
a header never silently drops data.

Why the errors look as they do: the files carry pseudonyms only, but a site could export the
wrong file. Errors therefore name the file's base name, the row (the header is row 1) and the
column, and never echo a cell's value.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from service.core.errors import DeidgateError

REQUIRED = ("exam", "woman")
OPTIONAL = ("label", "vendor", "age", "density", "laterality", "view", "arrival")
DENSITY = {"a": "a", "b": "b", "c": "c", "d": "d", "1": "a", "2": "b", "3": "c", "4": "d"}
LATERALITY = {"l": "L", "r": "R", "b": "B"}
_SCORE_NAME = re.compile(r"^score(_[a-z0-9][a-z0-9_-]{0,39})?$")
_MAX_ERRORS = 10


class ScoresFileError(DeidgateError):
    """The scores CSV cannot be used; ``reason`` lists row-numbered problems, never values."""

    code = "scores-invalid"


@dataclass(frozen=True)
class ScoreTable:
    """Parsed, validated columns (numpy arrays, one entry per row, in file order)."""

    exam: NDArray[np.str_]
    woman: NDArray[np.str_]
    scores: dict[str, NDArray[np.float64]]
    label: NDArray[np.int8] | None = None
    vendor: NDArray[np.str_] | None = None
    age: NDArray[np.float64] | None = None  # NaN where not recorded
    density: NDArray[np.str_] | None = None  # "" where not recorded
    laterality: NDArray[np.str_] | None = None
    view: NDArray[np.str_] | None = None
    arrival: NDArray[np.datetime64] | None = None  # NaT where not recorded
    source: str = field(default="scores CSV", compare=False)

    def __len__(self) -> int:
        return int(self.exam.shape[0])

    def __repr__(self) -> str:  # counts only: the pseudonyms stay out of logs
        return f"ScoreTable(rows={len(self)}, women={self.n_women}, scores={list(self.scores)})"

    @property
    def n_women(self) -> int:
        return int(np.unique(self.woman).shape[0])

    def keys(self) -> list[tuple[str, str, str]]:
        lat = self.laterality if self.laterality is not None else np.full(len(self), "")
        view = self.view if self.view is not None else np.full(len(self), "")
        return list(zip(self.exam.tolist(), lat.tolist(), view.tolist(), strict=True))

    def woman_codes(self) -> NDArray[np.intp]:
        """Integer cluster id per row (0..n_women-1), for the clustered bootstrap."""
        _, codes = np.unique(self.woman, return_inverse=True)
        return codes.astype(np.intp)

    def score(self, name: str | None = None) -> NDArray[np.float64]:
        if name is None:
            return next(iter(self.scores.values()))
        return self.scores[name]

    def need_label(self) -> NDArray[np.int8]:
        if self.label is None:
            raise ScoresFileError(f"{self.source}: this command needs a 'label' column")
        return self.label

    def need_arrival(self) -> NDArray[np.datetime64]:
        if self.arrival is None or np.isnat(self.arrival).any():
            raise ScoresFileError(
                f"{self.source}: this command needs an 'arrival' time on every row"
            )
        return self.arrival

    def subset(self, mask: NDArray[np.bool_]) -> ScoreTable:
        def cut(a: NDArray | None) -> NDArray | None:  # type: ignore[type-arg]
            return None if a is None else a[mask]

        return ScoreTable(
            exam=self.exam[mask],
            woman=self.woman[mask],
            scores={k: v[mask] for k, v in self.scores.items()},
            label=cut(self.label),
            vendor=cut(self.vendor),
            age=cut(self.age),
            density=cut(self.density),
            laterality=cut(self.laterality),
            view=cut(self.view),
            arrival=cut(self.arrival),
            source=self.source,
        )


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []
        self.count = 0

    def add(self, row: int, message: str) -> None:
        self.count += 1
        if len(self.items) < _MAX_ERRORS:
            self.items.append(f"row {row}: {message}")

    def raise_if_any(self) -> None:
        if not self.count:
            return
        more = f" (and {self.count - len(self.items)} more)" if self.count > len(self.items) else ""
        raise ScoresFileError(f"{self.source}: " + "; ".join(self.items) + more)


def _header(names: list[str], problems: _Problems, require_label: bool) -> list[str]:
    cols = [n.strip().lower() for n in names]
    seen: set[str] = set()
    for c in cols:
        if c in seen:
            problems.add(1, f"column '{c}' appears twice")
        seen.add(c)
        if c not in REQUIRED and c not in OPTIONAL and not _SCORE_NAME.match(c):
            allowed = ", ".join((*REQUIRED, "score or score_<name>", *OPTIONAL))
            problems.add(1, f"unknown column '{c[:40]}' (allowed: {allowed})")
    for c in (*REQUIRED, *(("label",) if require_label else ())):
        if c not in seen:
            problems.add(1, f"required column '{c}' is missing")
    if not any(_SCORE_NAME.match(c) for c in cols):
        problems.add(1, "no score column ('score' or 'score_<name>')")
    problems.raise_if_any()
    return cols


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_scores(path: Path, *, require_label: bool = True) -> ScoreTable:
    """Read and validate a scores CSV; raise ScoresFileError listing up to 10 problems."""
    source = Path(path).name or "scores CSV"
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            return _read(handle, source, require_label)
    except OSError as exc:
        raise ScoresFileError(f"{source}: cannot be read ({type(exc).__name__})") from None


def _read(handle: Iterable[str], source: str, require_label: bool) -> ScoreTable:
    problems = _Problems(source)
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        raise ScoresFileError(f"{source}: the file is empty") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ScoresFileError(f"{source}: row 1 is not CSV ({type(exc).__name__})") from None
    cols = _header(header, problems, require_label)
    index = {c: i for i, c in enumerate(cols)}
    score_cols = [c for c in cols if _SCORE_NAME.match(c)]
    out: dict[str, list[object]] = {c: [] for c in cols}
    rows: list[int] = []
    row = 1
    try:
        for cells in reader:
            row += 1
            if not any(cell.strip() for cell in cells):
                continue  # a blank line, e.g. at the end of a hand-edited file
            if len(cells) != len(cols):
                problems.add(row, f"{len(cells)} cells where the header has {len(cols)}")
                continue
            if _parse_row(cells, index, score_cols, out, row, problems):
                rows.append(row)
    except (csv.Error, UnicodeDecodeError) as exc:
        problems.add(row + 1, f"is not readable CSV ({type(exc).__name__})")
    problems.raise_if_any()
    if not out["exam"]:
        raise ScoresFileError(f"{source}: no data rows")
    table = _build(out, cols, score_cols, source)
    _check_keys(table, rows, problems)
    problems.raise_if_any()
    return table


def _parse_row(
    cells: list[str],
    index: dict[str, int],
    score_cols: list[str],
    out: dict[str, list[object]],
    row: int,
    problems: _Problems,
) -> bool:
    """Append one row's parsed values; False (and problems recorded) when it is refused."""
    get = {c: cells[i].strip() for c, i in index.items()}
    before = problems.count
    values: dict[str, object] = {}
    for c in REQUIRED:
        if not get[c]:
            problems.add(row, f"column '{c}' is empty")
        values[c] = get[c]
    for c in score_cols:
        number = _number(get[c])
        if number is None:
            problems.add(row, f"column '{c}' is not a finite number")
        values[c] = number
    if "label" in get:
        label = get["label"]
        if label not in ("0", "1"):
            problems.add(row, "column 'label' must be 0 or 1")
        values["label"] = 1 if label == "1" else 0
    for c in ("vendor", "view"):
        if c in get:
            values[c] = get[c]
    if "age" in get:
        age = _number(get["age"]) if get["age"] else math.nan
        if age is None or not (math.isnan(age) or (0 <= age <= 130 and age == int(age))):
            problems.add(row, "column 'age' must be whole years 0-130 or empty")
        values["age"] = age
    if "density" in get:
        d = DENSITY.get(get["density"].lower()) if get["density"] else ""
        if d is None:
            problems.add(row, "column 'density' must be a, b, c, d (or 1-4) or empty")
        values["density"] = d
    if "laterality" in get:
        lat = LATERALITY.get(get["laterality"].lower()) if get["laterality"] else ""
        if lat is None:
            problems.add(row, "column 'laterality' must be L, R, B or empty")
        values["laterality"] = lat
    if "arrival" in get:
        values["arrival"] = _arrival(get["arrival"], row, problems)
    if problems.count != before:
        return False
    for c, v in values.items():
        out[c].append(v)
    return True


def _arrival(text: str, row: int, problems: _Problems) -> np.datetime64:
    if not text:
        return np.datetime64("NaT", "s")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        problems.add(row, "column 'arrival' is not an ISO 8601 date-time")
        return np.datetime64("NaT", "s")
    if moment.tzinfo is not None:
        problems.add(row, "column 'arrival' has a UTC offset; give local wall-clock time")
        return np.datetime64("NaT", "s")
    return np.datetime64(moment.replace(microsecond=0), "s")


def _build(
    out: dict[str, list[object]], cols: list[str], score_cols: list[str], source: str
) -> ScoreTable:
    def text(c: str) -> NDArray[np.str_] | None:
        return np.array(out[c], dtype=np.str_) if c in cols else None

    scores = {
        (c[len("score_") :] if c != "score" else "score"): np.array(out[c], dtype=np.float64)
        for c in score_cols
    }
    return ScoreTable(
        exam=np.array(out["exam"], dtype=np.str_),
        woman=np.array(out["woman"], dtype=np.str_),
        scores=scores,
        label=np.array(out["label"], dtype=np.int8) if "label" in cols else None,
        vendor=text("vendor"),
        age=np.array(out["age"], dtype=np.float64) if "age" in cols else None,
        density=text("density"),
        laterality=text("laterality"),
        view=text("view"),
        arrival=np.array(out["arrival"], dtype="datetime64[s]") if "arrival" in cols else None,
        source=source,
    )


def _check_keys(table: ScoreTable, rows: list[int], problems: _Problems) -> None:
    first: dict[tuple[str, str, str], int] = {}
    owner: dict[str, str] = {}
    for i, key in enumerate(table.keys()):
        row = rows[i]
        if key in first:
            problems.add(row, f"repeats the exam (and laterality/view) of row {first[key]}")
        else:
            first[key] = row
        woman = str(table.woman[i])
        if owner.setdefault(key[0], woman) != woman:
            problems.add(row, "the same exam belongs to two different women")


def join_on_exam(a: ScoreTable, b: ScoreTable, names: tuple[str, str]) -> ScoreTable:
    """Two single-score files on the same exams, as one table with two named score columns.

    Every key must be in both files with the same woman and label: comparing two models on
    different exams would make DeLong's paired test meaningless.
    """
    if len(a.scores) != 1 or len(b.scores) != 1:
        raise ScoresFileError("each file of a two-file comparison must have one score column")
    if names[0] == names[1]:
        raise ScoresFileError("the two models need different names")
    where = {k: i for i, k in enumerate(b.keys())}
    keys_a = a.keys()
    missing = sum(1 for k in keys_a if k not in where)
    if missing or len(where) != len(keys_a):
        raise ScoresFileError(
            f"{a.source} and {b.source} must hold the same exams: {missing} of {len(keys_a)} "
            f"rows of the first are not in the second, which has {len(where)} rows"
        )
    order = np.array([where[k] for k in keys_a], dtype=np.intp)
    if not np.array_equal(a.woman, b.woman[order]):
        raise ScoresFileError(f"{a.source} and {b.source} disagree on which woman an exam is")
    la, lb = a.need_label(), b.label
    if lb is not None and not np.array_equal(la, lb[order]):
        bad = int(np.flatnonzero(la != lb[order])[0]) + 2
        raise ScoresFileError(f"{a.source} row {bad}: the label differs in {b.source}")
    return ScoreTable(
        exam=a.exam,
        woman=a.woman,
        scores={names[0]: a.score(), names[1]: b.score()[order]},
        label=la,
        vendor=a.vendor,
        age=a.age,
        density=a.density,
        laterality=a.laterality,
        view=a.view,
        arrival=a.arrival,
        source=a.source,
    )


def write_scores(path: Path, table: ScoreTable) -> None:
    """Write a table in the documented format (used by the demo data generator and tests)."""
    cols: list[tuple[str, NDArray | None]] = [  # type: ignore[type-arg]
        ("exam", table.exam),
        ("woman", table.woman),
    ]
    for name, values in table.scores.items():
        cols.append(("score" if name == "score" else f"score_{name}", values))
    for c in ("label", *OPTIONAL[1:]):
        cols.append((c, getattr(table, c)))
    present = [(c, v) for c, v in cols if v is not None]
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([c for c, _ in present])
        for i in range(len(table)):
            writer.writerow([_cell(v[i]) for _, v in present])


def _cell(value: object) -> str:
    if isinstance(value, np.datetime64):
        return "" if np.isnat(value) else str(value.astype("datetime64[s]"))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return ""
        return repr(float(value))
    return str(value)
