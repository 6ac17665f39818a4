"""The in-memory form of a challenge network: every layer in a fixed-width (ELL) layout.

A challenge layer has the same number of nonzeros in every row (32 in the official networks), so instead of
CSR's row pointers each layer is stored as two dense index tables:

* ``idx[l, i, k]``: the k-th output neuron that input neuron ``i`` feeds (ascending in ``k``);
* ``tidx[l, j, k]``: the k-th input neuron that feeds output neuron ``j`` (ascending in ``k``): the
  transpose's table, one contiguous run of indices per output.

Rows (or columns) with fewer entries than the table width are padded with the sentinel index ``N`` (one past
the last neuron): the engine keeps a zero at position ``N`` of every activation row, so a padded entry adds
nothing. When every weight of a layer is the same value (as in the challenge, 1/16) only that value is kept
(``weight[l]``); otherwise ``values``/``tvalues`` hold one weight per table entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from sparsetopo.errors import ConfigError

# Bias per network size in the official challenge.
OFFICIAL_BIAS = {1024: -0.30, 4096: -0.35, 16384: -0.40, 65536: -0.45}
OFFICIAL_NEURONS = tuple(OFFICIAL_BIAS)
OFFICIAL_LAYERS = (120, 480, 1920)
YMAX = 32.0


def default_bias(neurons: int) -> float:
    """The official bias for a network size; other sizes have no official bias."""
    try:
        return OFFICIAL_BIAS[int(neurons)]
    except KeyError:
        raise ConfigError(
            f"no official bias for {neurons} neurons (official sizes: "
            f"{', '.join(str(n) for n in OFFICIAL_NEURONS)}); give the bias explicitly"
        ) from None


def index_dtype(neurons: int, padded: bool) -> np.dtype:
    """uint16 when every stored index (the sentinel ``neurons`` included, if padding is used) fits."""
    top = neurons if padded else neurons - 1
    return np.dtype(np.uint16) if top <= np.iinfo(np.uint16).max else np.dtype(np.int32)


@dataclass
class ChallengeNetwork:
    """A stack of square sparse layers with one bias, in the engine's ELL layout (see the module doc)."""

    neurons: int
    bias: float
    idx: np.ndarray                  # (L, N, K) output index per input row, ascending; sentinel N pads
    tidx: np.ndarray                 # (L, N, KT) input index per output column, ascending; sentinel N pads
    nnz: np.ndarray                  # (L,) int64 edges per layer
    weight: np.ndarray | None = None     # (L,) float64: the single weight of each layer, when uniform
    values: np.ndarray | None = None     # (L, N, K) float64 weights matching idx (non-uniform layers)
    tvalues: np.ndarray | None = None    # (L, N, KT) float64 weights matching tidx
    ymax: float = YMAX
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # read-only views: the tables are shared (and may be memory-mapped read-only), and one array type
        # lets the compiled kernels serve every network
        for name in ("idx", "tidx", "values", "tvalues"):
            arr = getattr(self, name)
            if arr is not None:
                view = arr.view()
                view.flags.writeable = False
                setattr(self, name, view)
        n_layers = self.idx.shape[0]
        if self.idx.ndim != 3 or self.idx.shape[1] != self.neurons:
            raise ConfigError(f"idx must have shape (layers, {self.neurons}, K), got {self.idx.shape}")
        if self.tidx.ndim != 3 or self.tidx.shape[0] != n_layers or self.tidx.shape[1] != self.neurons:
            raise ConfigError(f"tidx must have shape ({n_layers}, {self.neurons}, KT), got {self.tidx.shape}")
        if (self.weight is None) == (self.values is None):
            raise ConfigError("give exactly one of weight (uniform layers) or values (per-edge weights)")
        if self.values is not None and (self.tvalues is None or self.values.shape != self.idx.shape
                                        or self.tvalues.shape != self.tidx.shape):
            raise ConfigError("values/tvalues must match the shapes of idx/tidx")
        if not np.isfinite(self.bias):
            raise ConfigError(f"bias must be finite, got {self.bias}")
        if not (np.isfinite(self.ymax) and self.ymax > 0):
            raise ConfigError(f"ymax must be a positive finite number, got {self.ymax}")

    @property
    def n_layers(self) -> int:
        return int(self.idx.shape[0])

    @property
    def edges(self) -> int:
        """Total number of edges (nonzero weights) over all layers: the challenge's edge count."""
        return int(np.sum(self.nnz))

    @property
    def uniform(self) -> bool:
        return self.weight is not None

    def layer(self, l: int) -> sp.csr_array:
        """Layer ``l`` (0-based) as a float64 CSR matrix, input x output."""
        if not 0 <= l < self.n_layers:
            raise IndexError(f"layer {l} out of range 0..{self.n_layers - 1}")
        n = self.neurons
        cols = np.asarray(self.idx[l]).astype(np.int64)
        if self.values is not None:
            vals = np.asarray(self.values[l], dtype=np.float64)
        else:
            vals = np.full(cols.shape, float(self.weight[l]))
        keep = cols < n
        rows = np.broadcast_to(np.arange(n)[:, None], cols.shape)[keep]
        mat = sp.csr_array((vals[keep], (rows, cols[keep])), shape=(n, n))
        mat.sort_indices()
        return mat

    def layers(self) -> list[sp.csr_array]:
        return [self.layer(l) for l in range(self.n_layers)]

    def subset(self, n_layers: int) -> ChallengeNetwork:
        """The first ``n_layers`` layers (views, no copy)."""
        if not 1 <= n_layers <= self.n_layers:
            raise ConfigError(f"layer count {n_layers} must be in 1..{self.n_layers}")
        cut = slice(0, n_layers)
        return ChallengeNetwork(
            self.neurons, self.bias, self.idx[cut], self.tidx[cut], self.nnz[cut],
            None if self.weight is None else self.weight[cut],
            None if self.values is None else self.values[cut],
            None if self.tvalues is None else self.tvalues[cut],
            self.ymax, dict(self.meta),
        )

    @classmethod
    def from_layers(
        cls, layers: Sequence[Any], bias: float, *, ymax: float = YMAX, meta: dict[str, Any] | None = None,
    ) -> ChallengeNetwork:
        """Build from square sparse matrices (input x output); boolean layers get weight 1/16."""
        if len(layers) == 0:
            raise ConfigError("a network needs at least one layer")
        mats = [canonical_layer(layer, l) for l, layer in enumerate(layers)]
        n = mats[0].shape[0]
        for l, mat in enumerate(mats):
            if mat.shape != (n, n):
                raise ConfigError(f"layer {l + 1}: every layer must be {n} x {n}, got {mat.shape}")
        k = max(int(np.diff(m.indptr).max(initial=0)) for m in mats) or 1
        col_counts = [np.bincount(m.indices, minlength=n) for m in mats]
        kt = max(int(c.max(initial=0)) for c in col_counts) or 1
        padded = any(int(np.diff(m.indptr).min(initial=0)) < k for m in mats) or any(
            int(c.min(initial=0)) < kt for c in col_counts)
        itype = index_dtype(n, padded)
        idx = np.empty((len(mats), n, k), dtype=itype)
        uniform = all(m.nnz == 0 or bool(np.all(m.data == m.data[0])) for m in mats)
        values = None if uniform else np.empty((len(mats), n, k))
        for l, m in enumerate(mats):
            rows_idx, rows_val = ell_rows(m, k, itype)
            idx[l] = rows_idx
            if values is not None:
                values[l] = rows_val
        tidx, tvalues = transpose_tables(idx, values, n)
        weight = None
        if uniform:
            weight = np.array([m.data[0] if m.nnz else 0.0625 for m in mats], dtype=np.float64)
        nnz = np.array([m.nnz for m in mats], dtype=np.int64)
        return cls(n, float(bias), idx, tidx, nnz, weight, values, tvalues, float(ymax), dict(meta or {}))


def canonical_layer(layer: Any, l: int = 0) -> sp.csr_array:
    """A square float64 CSR copy with sorted indices and no explicit zeros; bool layers get weight 1/16."""
    mat = sp.csr_array(layer)
    mat = (mat.astype(np.float64) * 0.0625) if mat.dtype == bool else mat.astype(np.float64)
    mat.sum_duplicates()
    mat.eliminate_zeros()
    mat.sort_indices()
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ConfigError(f"layer {l + 1}: a challenge layer must be square, got shape {mat.shape}")
    if not np.all(np.isfinite(mat.data)):
        raise ConfigError(f"layer {l + 1}: weights must be finite")
    return mat


def ell_rows(mat: sp.csr_array, k: int, itype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Row-ELL tables (N, k) of a sorted CSR layer: output indices (sentinel N pads) and weights (0 pads)."""
    n = mat.shape[0]
    counts = np.diff(mat.indptr)
    if counts.max(initial=0) > k:
        raise ConfigError(f"a row has {counts.max()} nonzeros, more than the table width {k}")
    rows = np.repeat(np.arange(n), counts)
    pos = np.arange(mat.nnz) - np.repeat(mat.indptr[:-1], counts)
    idx = np.full((n, k), n if mat.nnz < n * k else 0, dtype=itype)
    vals = np.zeros((n, k))
    idx[rows, pos] = mat.indices
    vals[rows, pos] = mat.data
    return idx, vals


def column_width(idx: np.ndarray, n: int) -> int:
    """The most inputs any output neuron has in any layer of the row tables ``idx`` (at least 1)."""
    kt = 1
    for l in range(idx.shape[0]):
        cols = np.asarray(idx[l]).ravel()
        kt = max(kt, int(np.bincount(cols[cols < n], minlength=n).max(initial=0)))
    return kt


def transpose_tables(
    idx: np.ndarray, values: np.ndarray | None, n: int, out: np.ndarray | None = None,
    tout: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Column tables (L, N, KT) from row tables (L, N, K): for each output, its inputs ascending.

    ``out``/``tout`` may be preallocated (e.g. memory-mapped) arrays of the right shape.
    """
    n_layers, _, k = idx.shape
    if out is None:
        out = np.empty((n_layers, n, column_width(idx, n)), dtype=idx.dtype)
    if values is not None and tout is None:
        tout = np.empty((n_layers, n, out.shape[2]))
    for l in range(n_layers):
        flat = np.asarray(idx[l]).ravel()         # row-major: inputs ascending
        order = np.argsort(flat, kind="stable")   # by output; a stable sort keeps the inputs ascending
        cols = flat[order].astype(np.int64)
        keep = cols < n
        order, cols = order[keep], cols[keep]
        rows = order // k
        counts = np.bincount(cols, minlength=n)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        pos = np.arange(cols.size) - np.repeat(starts, counts)
        padded = cols.size < n * out.shape[2]
        if padded and n > np.iinfo(out.dtype).max:
            raise ConfigError(f"layer {l + 1}: output neurons have differing input counts, which {out.dtype} "
                              f"tables cannot pad at {n} neurons")
        table = np.full((n, out.shape[2]), n if padded else 0, dtype=out.dtype)
        table[cols, pos] = rows
        out[l] = table
        if values is not None:
            vt = np.zeros((n, out.shape[2]))
            vt[cols, pos] = np.asarray(values[l]).ravel()[order]
            tout[l] = vt
    return out, tout
