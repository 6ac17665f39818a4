"""Statistics for the report: mean ± std over seeds, and the plateau test for training curves.

The plateau test
----------------
A run *plateaus* when its test accuracy stalls well below what the same configuration can reach. Given the
run's test-accuracy curve (one value per evaluation, in step order) and a reference accuracy ``R`` (the
best final accuracy reached by any seed of the same configuration: same structure, same hyperparameters,
only the seed differs), the run plateaus if some stretch of consecutive evaluations

- covers at least ``min_span`` (default 20%) of the run's evaluated steps and at least ``min_evals``
  (default 3) evaluations,
- stays within a band of ``tolerance`` (default 0.5 accuracy points: max - min <= 0.005), or, for a
  dataset of known classes, entirely at chance level (every value <= ``chance``: one class over the
  number of classes, plus ``CHANCE_MARGIN``): a network that answers one class for every input scores that
  class's share of the test set, and one that flips from class to class between evaluations (9.8% to
  11.35% on MNIST) is stalled as much as one that stays on a class, and
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

from sparsetopo.data.registry import get_spec
from sparsetopo.errors import ConfigError

MIN_SPAN = 0.2
MIN_EVALS = 3
TOLERANCE = 0.005
GAP = 0.02
# Above 1/classes: MNIST's largest class (the digit 1) is 11.35% of its test set.
CHANCE_MARGIN = 0.02


def chance_level(dataset: object) -> float | None:
    """The highest accuracy the plateau test treats as chance on a registered ``dataset`` (None for a user's
    dataset, whose classes the report does not know)."""
    try:
        spec = get_spec(str(dataset))
    except ConfigError:
        return None
    return 1 / spec.num_classes + CHANCE_MARGIN


MIN_SEEDS = 3  # no verdict on a configuration measured with fewer runs
LEVEL = 0.95  # confidence level of every interval in the report


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int
    min: float
    max: float
    values: tuple[float, ...] = ()

    @property
    def sem(self) -> float:
        """Standard error of the mean (nan below two runs)."""
        return self.std / math.sqrt(self.n) if self.n > 1 else math.nan

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
    return Stat(float(arr.mean()), std, len(xs), float(arr.min()), float(arr.max()), tuple(xs))


def enough(*stats: Stat | None) -> bool:
    """Whether every configuration has at least MIN_SEEDS runs: the least a verdict needs."""
    return all(s is not None and s.n >= MIN_SEEDS for s in stats)


def seeds_text(*stats: Stat | None) -> str:
    return "n=" + "/".join(str(s.n if s is not None else 0) for s in stats)


@dataclass(frozen=True)
class Interval:
    """A difference (or a proportion) with its confidence interval at ``LEVEL``."""

    value: float
    low: float
    high: float
    method: str

    def points(self) -> str:
        """The interval of an accuracy difference, in percentage points."""
        return f"{self.value * 100:+.2f} points [{self.low * 100:+.2f}, {self.high * 100:+.2f}]"

    def above(self, threshold: float) -> bool:
        return self.low > threshold

    def below(self, threshold: float) -> bool:
        return self.high < threshold


def welch(a: Stat, b: Stat, level: float = LEVEL) -> Interval:
    """mean(a) - mean(b) with Welch's t interval (unequal variances, Welch-Satterthwaite degrees of
    freedom). With no spread in either sample the interval is the difference itself."""
    from scipy import stats as sps

    d = a.mean - b.mean
    va, vb = (a.std ** 2 / a.n if a.n > 1 else 0.0), (b.std ** 2 / b.n if b.n > 1 else 0.0)
    se = math.sqrt(va + vb)
    if se == 0 or a.n < 2 or b.n < 2:
        return Interval(d, d, d, "Welch")
    df = (va + vb) ** 2 / ((va ** 2 / (a.n - 1) if a.n > 1 else 0.0) + (vb ** 2 / (b.n - 1) if b.n > 1 else 0.0))
    t = float(sps.t.ppf(0.5 + level / 2, df))
    return Interval(d, d - t * se, d + t * se, "Welch")


def combined(parts: Sequence[tuple[float, Stat]], level: float = LEVEL) -> Interval:
    """A linear combination sum(c * mean) of independent means, with a normal-approximation interval (for a
    difference of differences, e.g. one loss against another)."""
    from scipy import stats as sps

    value = sum(c * s.mean for c, s in parts)
    se = math.sqrt(sum((c ** 2) * (s.std ** 2 / s.n) for c, s in parts if s.n > 1))
    z = float(sps.norm.ppf(0.5 + level / 2))
    return Interval(value, value - z * se, value + z * se, "normal")


def wilson(k: int, n: int, level: float = LEVEL) -> Interval:
    """The proportion k/n with its Wilson score interval."""
    from scipy import stats as sps

    if n == 0:
        return Interval(math.nan, math.nan, math.nan, "Wilson")
    z = float(sps.norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), "Wilson")


def fisher(k1: int, n1: int, k2: int, n2: int) -> float:
    """Fisher's exact two-sided p-value that two rates k1/n1 and k2/n2 are the same."""
    from scipy.stats import fisher_exact

    return float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)


@dataclass(frozen=True)
class Plateau:
    plateaued: bool
    stuck: bool
    level: float | None  # accuracy of the longest qualifying stretch
    start_step: int | None
    end_step: int | None


def plateau_test(steps: Sequence[int], accuracy: Sequence[float], reference: float, *,
                 min_span: float = MIN_SPAN, min_evals: int = MIN_EVALS, tolerance: float = TOLERANCE,
                 gap: float = GAP, chance: float | None = None) -> Plateau:
    """Apply the plateau test (module docstring) to one run's curve; ``chance`` as ``chance_level``."""
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
            if hi - lo > tolerance and (chance is None or hi > chance):
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
