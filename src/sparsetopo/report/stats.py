"""Statistics for the report: mean ± std over seeds, and the plateau test for training curves.

The plateau test
----------------
A run *plateaus* when its test accuracy stalls well below what the same configuration can reach. Given the
run's test-accuracy curve (one value per evaluation, in step order) and a reference accuracy ``R`` (the
best final accuracy reached by any seed of the same configuration: same structure, same hyperparameters,
only the seed differs), the run plateaus if some stretch of consecutive evaluations

- covers at least ``min_span`` (default 20%) of the run's evaluated steps and at least ``min_evals``
  (default 3) evaluations,
- stays within a band of ``tolerance`` (default 0.5 accuracy points: max - min <= 0.005), and
- lies at least ``gap`` (default 2 points) below the reference (its highest value <= R - 0.02).

A run is *stuck* if such a stretch includes its last evaluation: it ended on the plateau. Both are
reported. With a single seed the reference is the run's own best, so a lone run is only flagged for a
plateau it later escaped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

MIN_SPAN = 0.2
MIN_EVALS = 3
TOLERANCE = 0.005
GAP = 0.02


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int
    min: float
    max: float

    def text(self, percent: bool = True) -> str:
        if self.n == 0:
            return "–"
        k = 100.0 if percent else 1.0
        if self.n == 1:
            return f"{self.mean * k:.2f} (n=1)"
        return f"{self.mean * k:.2f} ± {self.std * k:.2f} (n={self.n})"


def describe(values: Iterable[float | None]) -> Stat:
    """Mean, sample standard deviation (ddof=1; 0 for one value), n, min and max of the finite values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return Stat(math.nan, math.nan, 0, math.nan, math.nan)
    arr = np.asarray(xs)
    std = float(arr.std(ddof=1)) if len(xs) > 1 else 0.0
    return Stat(float(arr.mean()), std, len(xs), float(arr.min()), float(arr.max()))


@dataclass(frozen=True)
class Plateau:
    plateaued: bool
    stuck: bool
    level: float | None  # accuracy of the longest qualifying stretch
    start_step: int | None
    end_step: int | None


def plateau_test(steps: Sequence[int], accuracy: Sequence[float], reference: float, *,
                 min_span: float = MIN_SPAN, min_evals: int = MIN_EVALS, tolerance: float = TOLERANCE,
                 gap: float = GAP) -> Plateau:
    """Apply the plateau test (module docstring) to one run's curve."""
    pts = [(int(s), float(a)) for s, a in zip(steps, accuracy) if a is not None and math.isfinite(float(a))]
    if len(pts) < min_evals:
        return Plateau(False, False, None, None, None)
    xs = [s for s, _ in pts]
    ys = [a for _, a in pts]
    total = max(xs[-1] - xs[0], 1)
    best: tuple[int, int] | None = None  # (i, j) of the longest qualifying stretch
    stuck = False
    n = len(ys)
    for i in range(n):
        lo = hi = ys[i]
        for j in range(i + 1, n):
            lo, hi = min(lo, ys[j]), max(hi, ys[j])
            if hi - lo > tolerance:
                break
            if j - i + 1 >= min_evals and (xs[j] - xs[i]) / total >= min_span and hi <= reference - gap:
                if best is None or xs[j] - xs[i] > xs[best[1]] - xs[best[0]]:
                    best = (i, j)
                if j == n - 1:
                    stuck = True
    if best is None:
        return Plateau(False, False, None, None, None)
    i, j = best
    return Plateau(True, stuck, float(np.mean(ys[i:j + 1])), xs[i], xs[j])


def correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation (nan with fewer than 3 points or no spread)."""
    if len(x) < 3:
        return math.nan
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if xa.std() == 0 or ya.std() == 0:
        return math.nan
    return float(np.corrcoef(xa, ya)[0, 1])
