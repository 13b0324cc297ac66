"""A discrete-event simulation of a screening reading queue under three orderings.

The question it answers (Nabulsi et al. 2021; Baltruschat et al. 2021): if readers take the
highest-scored exam first, how much sooner are cancers read, and what happens to the exams the
model scores low? Priority ordering moves abnormal exams forward, but under load a low-scored
exam can wait a very long time; a maximum-wait ceiling (an exam waiting at least ``ceiling``
seconds goes to the top, oldest first) bounds that.

The model, kept deliberately simple so its invariants can be checked:

- Time is seconds from Monday 00:00 of the first arrival's week.
- ``readers`` readers each read one exam at a time, ``3600 / reads_per_hour`` seconds per read
  (deterministic), only inside working hours ([day_start, day_end) on Monday-Friday, or every
  day); a read is started only if it finishes inside the same working window.
- A reader who becomes free takes the next exam by the ordering from those that have arrived;
  if none has, the reader waits for the next arrival. Nothing is dropped: the simulation runs
  until every exam is read.
- Turnaround is the end of the read minus arrival (wall-clock, nights and weekends included).

Orderings: ``fifo`` (arrival order), ``score`` (highest score first, ties by arrival),
``score+ceiling`` (as ``score``, but the oldest exam that has waited >= ceiling comes first).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
DAY = 86_400.0
POLICIES = ("fifo", "score", "score+ceiling")


@dataclass(frozen=True)
class Hours:
    """Open hours: [day_start, day_end) local time, on Monday-Friday or every day."""

    day_start: float = 8.0
    day_end: float = 16.0
    weekdays_only: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.day_start < self.day_end <= 24:
            raise ValueError("hours must satisfy 0 <= day_start < day_end <= 24")

    @property
    def seconds_per_day(self) -> float:
        return (self.day_end - self.day_start) * 3600

    def works_on(self, day: int) -> bool:
        return not self.weekdays_only or day % 7 < 5

    def window(self, day: int) -> tuple[float, float]:
        return day * DAY + self.day_start * 3600, day * DAY + self.day_end * 3600


ALWAYS = Hours(0.0, 24.0, weekdays_only=False)


@dataclass(frozen=True)
class Capacity:
    readers: int = 2
    reads_per_hour: float = 30.0
    hours: Hours = Hours()

    def __post_init__(self) -> None:
        if self.readers < 1 or not self.reads_per_hour > 0:
            raise ValueError("capacity needs at least one reader and a positive reading rate")
        if self.read_seconds > self.hours.seconds_per_day:
            raise ValueError("one read is longer than the working day")

    @property
    def read_seconds(self) -> float:
        return 3600.0 / self.reads_per_hour

    def next_start(self, t: float) -> float:
        """Earliest time >= t at which a whole read fits in a working window."""
        d = self.read_seconds
        day = math.floor(t / DAY)
        for k in range(day, day + 8):
            if not self.hours.works_on(k):
                continue
            lo, hi = self.hours.window(k)
            s = max(t, lo)
            if s + d <= hi + 1e-6:
                return s
        raise AssertionError("no working window within a week")  # excluded by __post_init__

    def reads_per_day(self) -> int:
        """Reads all readers together finish in one working day."""
        return self.readers * math.floor(self.hours.seconds_per_day / self.read_seconds + 1e-9)


@dataclass(frozen=True)
class QueueRun:
    policy: str
    start: Floats  # per exam, seconds
    end: Floats
    reader: NDArray[np.intp]

    def turnaround(self, arrival: Floats) -> Floats:
        return self.end - arrival

    def wait(self, arrival: Floats) -> Floats:
        return self.start - arrival


def simulate_queue(
    arrival: Floats,
    scores: Floats,
    capacity: Capacity,
    policy: str,
    ceiling: float | None = None,
) -> QueueRun:
    """Run one ordering; arrays are per exam, in any order (results follow the input order)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown ordering {policy!r}; choose one of {', '.join(POLICIES)}")
    if policy == "score+ceiling" and (ceiling is None or ceiling < 0):
        raise ValueError("the score+ceiling ordering needs a non-negative ceiling")
    n = arrival.size
    if scores.size != n or not np.all(np.isfinite(arrival)) or not np.all(np.isfinite(scores)):
        raise ValueError("arrival and score must be finite and of equal length")
    order = np.lexsort((np.arange(n), arrival))  # by arrival, then input position
    start = np.full(n, np.nan)
    reader = np.full(n, -1, dtype=np.intp)
    d = capacity.read_seconds
    free: list[tuple[float, int]] = [(0.0, r) for r in range(capacity.readers)]
    by_arrival: list[tuple[float, int]] = []  # (arrival, i): FIFO, and the ceiling's view
    by_score: list[tuple[float, float, int]] = []  # (-score, arrival, i)
    done = np.zeros(n, dtype=bool)
    nxt = 0
    remaining = n
    while remaining:
        t_free, r = heapq.heappop(free)
        t = capacity.next_start(t_free)
        while nxt < n and arrival[order[nxt]] <= t:
            i = int(order[nxt])
            heapq.heappush(by_arrival, (float(arrival[i]), i))
            if policy != "fifo":
                heapq.heappush(by_score, (-float(scores[i]), float(arrival[i]), i))
            nxt += 1
        _drop_read(by_arrival, done, 1)
        if not by_arrival:  # nothing waiting: idle until the next arrival
            heapq.heappush(free, (max(t, float(arrival[order[nxt]])), r))
            continue
        if policy == "fifo" or (
            policy == "score+ceiling" and t - by_arrival[0][0] >= float(ceiling or 0.0)
        ):
            i = heapq.heappop(by_arrival)[1]
        else:
            _drop_read(by_score, done, 2)
            i = heapq.heappop(by_score)[2]
        done[i] = True
        start[i], reader[i] = t, r
        remaining -= 1
        heapq.heappush(free, (t + d, r))
    return QueueRun(policy, start, start + d, reader)


def _drop_read(heap: list, done: NDArray[np.bool_], pos: int) -> None:  # type: ignore[type-arg]
    """Lazy deletion: an exam taken through the other heap is discarded when it surfaces."""
    while heap and done[heap[0][pos]]:
        heapq.heappop(heap)


# --- arrival patterns -----------------------------------------------------------------------


def poisson_arrivals(
    n: int, per_hour: float, hours: Hours, rng: np.random.Generator
) -> Floats:
    """n arrivals of a Poisson process running only in ``hours``' working windows."""
    if not per_hour > 0:
        raise ValueError("the arrival rate must be positive")
    gaps = rng.exponential(3600.0 / per_hour, size=n)
    busy = np.cumsum(gaps)  # seconds of open time elapsed at each arrival
    per_day = hours.seconds_per_day
    out = np.empty(n)
    day, used, j = 0, 0.0, 0
    while j < n:
        if hours.works_on(day):
            lo, _ = hours.window(day)
            while j < n and busy[j] < used + per_day:
                out[j] = lo + (busy[j] - used)
                j += 1
            used += per_day
        day += 1
    return out


def batch_arrivals(n: int, per_day: int, at_hour: float, hours: Hours) -> Floats:
    """``per_day`` exams arrive together at ``at_hour`` on each working day (a session's
    exams uploaded at once), until n have arrived."""
    if per_day < 1 or not 0 <= at_hour < 24:
        raise ValueError("a batch needs per_day >= 1 and an hour in [0, 24)")
    out = np.empty(n)
    day, j = 0, 0
    while j < n:
        if hours.works_on(day):
            k = min(per_day, n - j)
            out[j : j + k] = day * DAY + at_hour * 3600
            j += k
        day += 1
    return out


def seconds_since_week_start(times: NDArray[np.datetime64]) -> Floats:
    """Wall-clock times as seconds from Monday 00:00 of the earliest time's week."""
    t = times.astype("datetime64[s]")
    first = t.min().astype("datetime64[D]")
    weekday = (first.astype(np.int64) - 4) % 7  # 1970-01-01 was a Thursday (weekday 3)
    monday = first - np.timedelta64(int(weekday), "D")
    return np.asarray((t - monday.astype("datetime64[s]")).astype(np.float64))


def summarise(values_hours: Floats) -> dict[str, float | int]:
    if values_hours.size == 0:
        return {"n": 0}
    return {
        "n": int(values_hours.size),
        "mean": float(values_hours.mean()),
        "median": float(np.median(values_hours)),
        "p95": float(np.percentile(values_hours, 95)),
        "max": float(values_hours.max()),
    }
