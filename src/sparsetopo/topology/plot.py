"""Pictures of topologies: layered bipartite graphs for small nets, adjacency (spy) plots for large ones.

Uses matplotlib's object API with the Agg canvas, so no global backend is changed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from sparsetopo.errors import ConfigError
from sparsetopo.fileio import atomic_path
from sparsetopo.topology.core import Topology

# A net is drawn as a graph when every layer is at most this wide and it has at most this many edges.
GRAPH_MAX_WIDTH = 64
GRAPH_MAX_EDGES = 5000
# Spy plots of larger layers are binned to at most this many pixels per side.
SPY_MAX_PIXELS = 400


def is_small(topo: Topology) -> bool:
    """True when ``topo`` is drawn as a layered graph rather than spy plots."""
    return max(topo.sizes) <= GRAPH_MAX_WIDTH and max(a for a, _ in topo.shapes) <= GRAPH_MAX_WIDTH \
        and topo.total_nnz <= GRAPH_MAX_EDGES


def _draw_graph(ax, topo: Topology, title: str) -> None:
    from matplotlib.collections import LineCollection

    widths = [topo.layers[0].shape[0]] + [m.shape[1] for m in topo.layers]
    depth = len(widths) - 1
    span = max(widths)

    def xs(n: int) -> np.ndarray:
        return (np.arange(n) - (n - 1) / 2.0) * (span / max(n, 1)) if n > 1 else np.zeros(1)

    segments = []
    for i, m in enumerate(topo.layers):
        coo = m.tocoo()
        x_in = xs(m.shape[0])
        x_out = xs(m.shape[1])
        y0, y1 = depth - i, depth - i - 1
        seg = np.empty((coo.nnz, 2, 2))
        seg[:, 0, 0] = x_in[coo.row]
        seg[:, 0, 1] = y0
        seg[:, 1, 0] = x_out[coo.col]
        seg[:, 1, 1] = y1
        segments.append(seg)
    if segments:
        ax.add_collection(LineCollection(np.concatenate(segments),  # type: ignore[arg-type]  # an (N, 2, 2) array is accepted; stubs want a Sequence
                                         colors="0.35", linewidths=0.6, alpha=0.8))
    for j, n in enumerate(widths):
        ax.scatter(xs(n), np.full(n, depth - j), s=max(4.0, 120.0 / max(widths)), c="tab:blue", zorder=3)
    ax.set_xlim(-span / 2 - 0.5, span / 2 + 0.5)
    ax.set_ylim(-0.3, depth + 0.3)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def _draw_spy(ax, mat, title: str) -> None:
    n_in, n_out = mat.shape
    rows_px, cols_px = min(n_in, SPY_MAX_PIXELS), min(n_out, SPY_MAX_PIXELS)
    coo = mat.tocoo()
    img = np.zeros((rows_px, cols_px))
    np.add.at(img, (coo.row * rows_px // n_in, coo.col * cols_px // n_out), 1.0)
    cell = (n_in / rows_px) * (n_out / cols_px)
    img /= cell  # fill fraction of each pixel's block
    ax.imshow(img, cmap="Greys", vmin=0, vmax=max(float(img.max()), 1e-12), aspect="auto",
              interpolation="nearest", extent=(0, n_out, n_in, 0))
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("output", fontsize=7)
    ax.set_ylabel("input", fontsize=7)
    ax.tick_params(labelsize=6)


def plot_topologies(topos: Sequence[Topology], path: str | os.PathLike[str], titles: Sequence[str] | None = None) -> None:
    """Draw ``topos`` side by side (e.g. a RadiX-Net beside its random equivalent) into a PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not topos:
        raise ConfigError("nothing to plot: no topologies given")
    if not str(path).lower().endswith(".png"):
        raise ConfigError(f"plot file {str(path)!r} must end in .png")
    titles = list(titles) if titles is not None else [f"topology {k}" for k in range(len(topos))]
    if len(titles) != len(topos):
        raise ConfigError(f"{len(titles)} titles for {len(topos)} topologies")
    if all(is_small(t) for t in topos):
        fig = Figure(figsize=(4.5 * len(topos), 4.5))
        for k, topo in enumerate(topos):
            _draw_graph(fig.add_subplot(1, len(topos), k + 1), topo, titles[k])
    else:
        n_layers = max(len(t) for t in topos)
        fig = Figure(figsize=(2.6 * n_layers + 0.5, 2.8 * len(topos)))
        for k, topo in enumerate(topos):
            for i, m in enumerate(topo.layers):
                ax = fig.add_subplot(len(topos), n_layers, k * n_layers + i + 1)
                name = topo.names[i] if topo.names else f"layer {i}"
                _draw_spy(ax, m, f"{titles[k]}: {name}\n{m.shape[0]}x{m.shape[1]}, nnz {m.nnz:,}")
    fig.tight_layout()
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
