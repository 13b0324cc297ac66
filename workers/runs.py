"""8-connected components of a boolean mask, by runs per row and union-find over touching runs.

Shared by burned-in text detection (``workers/deid/pixel_text``: components of a block grid)
and breast cropping (``workers/score/preprocess``: the largest bright component). The grids are
small (a few hundred runs), so plain lists beat scipy's import and any per-pixel labelling.
"""

from __future__ import annotations

import numpy as np


def label_runs(mask: np.ndarray) -> tuple[list[int], list[int], list[int], list[int]]:
    """(rows, starts, ends, labels), one entry per horizontal run of True in row-major order;
    ``ends`` are exclusive and a run's label is the smallest run index of its component."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rows_a, starts_a = np.nonzero(d == 1)
    ends_a = np.nonzero(d == -1)[1]  # the same row-major order as the starts
    rows, starts, ends = rows_a.tolist(), starts_a.tolist(), ends_a.tolist()
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_first = np.searchsorted(rows_a, np.arange(h + 1)).tolist()
    for r in range(1, h):
        i, a1 = row_first[r - 1], row_first[r]
        j, b1 = row_first[r], row_first[r + 1]
        while i < a1 and j < b1:
            if starts[i] <= ends[j] and starts[j] <= ends[i]:  # touching, diagonals included
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    return rows, starts, ends, [find(k) for k in range(len(rows))]
