"""Figure helpers: matplotlib with the Agg backend, every figure saved as PNG and SVG, reproducibly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sparsetopo.fileio import atomic_path  # noqa: E402
from sparsetopo.report.stats import Stat  # noqa: E402

plt.rcParams.update({
    "svg.hashsalt": "sparsetopo",  # stable ids in the SVG output
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "font.size": 9,
})

COLORS = {
    "gradual": "#1f77b4", "oneshot": "#d62728", "connections": "#2ca02c", "neurons": "#9467bd",
    "dense": "#555555",
}


def panel_grid(n: int, ncols: int | None = None, size: tuple[float, float] = (4.2, 3.2),
               nrows: int | None = None) -> tuple[Any, list[Any]]:
    """A figure with ``n`` panels (``nrows`` x ``ncols``), returned as a flat list of axes."""
    if nrows is not None and ncols is not None:
        rows, cols = nrows, ncols
    else:
        cols = ncols or min(n, 3)
        rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def errorbar(ax: Any, xs: Sequence[float], stats: Sequence[Stat], label: str, color: str | None = None,
             marker: str = "o", linestyle: str = "-", points: Sequence[Sequence[float]] | None = None) -> None:
    """Mean ± std over seeds, with the individual runs as faint dots."""
    pairs = [(x, s) for x, s in zip(xs, stats) if s.n > 0]
    if not pairs:
        return
    pairs.sort(key=lambda p: p[0])
    x = [p[0] for p in pairs]
    y = [p[1].mean * 100 for p in pairs]
    e = [p[1].std * 100 for p in pairs]
    line = ax.errorbar(x, y, yerr=e, label=label, color=color, marker=marker, linestyle=linestyle, capsize=3,
                       markersize=5, linewidth=1.4)
    if points is not None:
        c = line[0].get_color()
        for xv, pts in zip(xs, points):
            ax.scatter([xv] * len(pts), [p * 100 for p in pts], color=c, alpha=0.35, s=10, zorder=1)


def sparsity_axis(ax: Any, xs: Sequence[float]) -> None:
    """An x axis of sparsities 0 .. 0.99 spaced by -log10(1 - s), labelled as percentages."""
    ax.set_xscale("function", functions=(_fwd, _inv))
    ticks = sorted({round(x, 4) for x in xs})
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t * 100:g}%" for t in ticks], rotation=45 if len(ticks) > 5 else 0)
    ax.set_xlabel("sparsity (fraction of connections removed)")


def _fwd(x: Any) -> Any:
    import numpy as np

    return -np.log10(np.clip(1.0 - np.asarray(x, float), 1e-6, None))


def _inv(y: Any) -> Any:
    import numpy as np

    return 1.0 - 10.0 ** (-np.asarray(y, float))


def save(fig: Any, folder: Path, name: str) -> list[str]:
    """Write ``name``.png and ``name``.svg into ``folder``; return their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    names = []
    for ext in ("png", "svg"):
        with atomic_path(folder / f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, metadata={"Date": None} if ext == "svg" else None)
        names.append(f"{name}.{ext}")
    plt.close(fig)
    return names
