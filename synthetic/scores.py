"""Synthetic screening scores: an invented evaluation set for the model toolkit's tests, demo and
sample reports (no images, no real women; nothing here is a clinical model).

What it imitates, so the statistics have something real-looking to measure:

- women with one to three screening rounds, and a per-woman latent factor shared by all her
  exams (so exams within a woman are correlated and the clustered bootstrap is wider);
- an enriched cancer rate (default 3% of exams; real screening finds about 6 per 1000);
- three vendors, ages 45-74, BI-RADS density a-d, with dense breasts lowering discrimination;
- arrival times on weekdays 08-16 over ``weeks`` weeks, and one vendor whose scores shift
  upwards from ``drift_week`` on (a "software upgrade"), for the drift monitor.

Run ``python -m synthetic.scores OUT.csv`` to write one (see ``--help``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from workers.score.table import ScoreTable, write_scores

VENDORS = ("vendor-A", "vendor-B", "vendor-C")


def synthetic_scores(
    n_women: int = 8000,
    *,
    seed: int = 0,
    prevalence: float = 0.03,
    separation: float = 2.2,
    woman_sd: float = 1.0,
    weeks: int = 12,
    drift_week: int | None = 9,
    drift_vendor: str = "vendor-C",
    drift_shift: float = 0.8,
    second_model: bool = False,
) -> ScoreTable:
    """An evaluation set; ``second_model`` adds a weaker model's scores (column ``b``)."""
    rng = np.random.default_rng(seed)
    rounds = 1 + rng.binomial(2, 0.5, size=n_women)
    woman = np.repeat(np.arange(n_women), rounds)
    n = woman.size
    latent = rng.normal(0.0, woman_sd, size=n_women)[woman]
    vendor_of = rng.choice(len(VENDORS), size=n_women, p=(0.5, 0.3, 0.2))[woman]
    age = np.clip(rng.integers(45, 72, size=n_women)[woman] + _round_offset(woman, rounds) * 2,
                  45, 74).astype(np.float64)
    density = rng.choice(np.array(list("abcd")), size=n, p=(0.1, 0.4, 0.4, 0.1))
    # cancer risk rises with the woman's latent factor (shared by her exams), so do her scores
    risk = 1 / (1 + np.exp(-(np.log(prevalence / (1 - prevalence)) + 0.6 * latent)))
    label = (rng.random(n) < risk).astype(np.int8)
    dense = np.isin(density, ("c", "d"))
    week = rng.integers(0, weeks, size=n)
    arrival = _arrivals(rng, week)
    drift = np.zeros(n)
    if drift_week is not None:
        drift[(np.array(VENDORS)[vendor_of] == drift_vendor) & (week >= drift_week)] = drift_shift
    vendor_offset = np.array([0.0, -0.3, 0.2])[vendor_of]
    signal = separation * label * np.where(dense, 0.7, 1.0)
    base = -3.2 + 0.5 * latent + vendor_offset + drift
    scores = {"score": _sigmoid(base + signal + rng.normal(0, 1.0, n))}
    if second_model:
        scores["b"] = _sigmoid(base + 0.7 * signal + rng.normal(0, 1.0, n))
    return ScoreTable(
        exam=np.array([f"2.25.{900000 + i}" for i in range(n)], dtype=np.str_),
        woman=np.array([f"W{w:06d}" for w in woman], dtype=np.str_),
        scores={k: np.round(v, 5) for k, v in scores.items()},
        label=label,
        vendor=np.array(VENDORS, dtype=np.str_)[vendor_of],
        age=age,
        density=density.astype(np.str_),
        arrival=arrival,
        source="synthetic scores",
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _round_offset(woman: np.ndarray, rounds: np.ndarray) -> np.ndarray:
    starts = np.repeat(np.cumsum(rounds) - rounds, rounds)
    return np.asarray(np.arange(woman.size) - starts)


def _arrivals(rng: np.random.Generator, week: np.ndarray) -> np.ndarray:
    """Weekdays 08:00-16:00 from Monday 2024-01-01 (ISO week 2024-W01)."""
    day = week * 7 + rng.integers(0, 5, size=week.size)
    seconds = 8 * 3600 + rng.integers(0, 8 * 3600, size=week.size)
    start = np.datetime64("2024-01-01T00:00:00", "s")
    return np.asarray(start + (day * 86_400 + seconds).astype("timedelta64[s]"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--women", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prevalence", type=float, default=0.03)
    parser.add_argument("--second-model", action="store_true",
                        help="add a weaker model's scores as column score_b")
    args = parser.parse_args()
    table = synthetic_scores(args.women, seed=args.seed, prevalence=args.prevalence,
                             second_model=args.second_model)
    write_scores(args.out, table)
    print(f"wrote {len(table)} exams of {table.n_women} women, "
          f"{int(table.need_label().sum())} cancers, to {args.out}")


if __name__ == "__main__":
    main()
