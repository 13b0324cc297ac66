"""Clustered bootstrap of the AUC: the vectorised engine beside a plain per-resample loop.

In one run, on the same synthetic scores (default 100,000 exams of ~50,000 women):
  reference  the textbook loop: per resample, draw women, gather their rows, scipy rankdata,
             Mann-Whitney AUC (timed on --loop resamples and scaled to --resamples)
  engine     workers.score.stats.bootstrap_auc (women aggregated once, sparse level counts,
             chunks of 32 resamples), with and without the pointwise ROC band
  delong     DeLong's interval on the same data
Each timing is the median of --rounds rounds. The two AUC interval estimates are printed too:
they must agree to within Monte Carlo noise, since they resample the same way.

Usage: .venv/bin/python benchmarks/bench_stats.py [--exams 100000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy import stats as sps

from workers.score import stats


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    women = rng.integers(0, n // 2, n)
    _, clusters = np.unique(women, return_inverse=True)
    labels = (rng.random(n) < 0.03).astype(np.int8)
    scores = np.round(rng.normal(1.5 * labels, 1.0), 3)
    return scores, labels, clusters.astype(np.intp)


def loop_bootstrap(scores: np.ndarray, labels: np.ndarray, clusters: np.ndarray, b: int,
                   seed: int) -> np.ndarray:
    order = np.argsort(clusters, kind="stable")
    starts = np.searchsorted(clusters[order], np.arange(clusters.max() + 1))
    ends = np.append(starts[1:], clusters.size)
    rng = np.random.default_rng(seed)
    out = np.empty(b)
    for i in range(b):
        drawn = rng.integers(0, starts.size, starts.size)
        rows = order[_rows(starts, ends, drawn)]
        s, y = scores[rows], labels[rows]
        r = sps.rankdata(s)
        n1 = int(y.sum())
        out[i] = (r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (y.size - n1))
    return out


def _rows(starts: np.ndarray, ends: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    lengths = ends[drawn] - starts[drawn]
    offsets = np.repeat(starts[drawn] - np.cumsum(lengths) + lengths, lengths)
    return np.arange(lengths.sum()) + offsets


def timed(fn, rounds: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--exams", type=int, default=100_000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--loop", type=int, default=50, help="resamples timed for the reference")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    scores, labels, clusters = data(a.exams, 1)
    boot = stats.ClusterBootstrap(clusters, a.resamples, 0)
    print(f"{a.exams} exams, {boot.n_clusters} women, {int(labels.sum())} cancers, "
          f"{a.resamples} resamples, median of {a.rounds} rounds")
    t_loop = timed(lambda: loop_bootstrap(scores, labels, clusters, a.loop, 0), a.rounds)
    t_loop *= a.resamples / a.loop
    t_band = timed(lambda: stats.bootstrap_auc(scores, labels, boot), a.rounds)
    t_auc = timed(lambda: stats.bootstrap_auc(scores, labels, boot, grid_points=0), a.rounds)
    t_delong = timed(lambda: stats.delong_interval(scores, labels), a.rounds)
    print(f"{'variant':<34}{'seconds':>10}{'x reference':>14}")
    print(f"{'reference loop (scaled)':<34}{t_loop:>10.2f}{1.0:>14.2f}")
    print(f"{'engine, AUC only':<34}{t_auc:>10.2f}{t_loop / t_auc:>14.1f}")
    print(f"{'engine, AUC + ROC band (101 pts)':<34}{t_band:>10.2f}{t_loop / t_band:>14.1f}")
    print(f"{'DeLong interval':<34}{t_delong:>10.3f}{t_loop / t_delong:>14.0f}")
    ref = loop_bootstrap(scores, labels, clusters, 400, 7)
    eng = stats.bootstrap_auc(scores, labels, boot, grid_points=0).auc
    print(f"interval: engine {eng.low:.4f}-{eng.high:.4f}; loop (400 resamples) "
          f"{np.percentile(ref, 2.5):.4f}-{np.percentile(ref, 97.5):.4f}; DeLong "
          f"{stats.delong_interval(scores, labels).low:.4f}-"
          f"{stats.delong_interval(scores, labels).high:.4f}")


if __name__ == "__main__":
    main()
