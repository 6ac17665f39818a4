"""The :class:`Topology` type: an ordered list of boolean layer adjacency matrices plus metadata.

Layer ``i`` is a ``scipy.sparse.csr_array`` of dtype bool and shape ``(n_in, n_out)``, input x output:
entry ``[x, y]`` is true when input neuron ``x`` feeds output neuron ``y`` (the transpose of a PyTorch
weight). A conv layer is described at channel granularity (``in_channels x out_channels``); its optional
weight-level mask (PyTorch layout ``out x in x kh x kw``) lives in ``kernel_masks[i]``.

Consecutive layers chain when ``layers[i].shape[1] == layers[i + 1].shape[0]``. A layer whose input count is
a multiple ``k`` of the previous layer's output count reads that output flattened, unit-major (the way
``torch.flatten`` lays out ``C x H x W``): unit ``u`` feeds inputs ``u*k .. u*k + k - 1``. This is how a conv
layer's output channels feed the first fully-connected layer of a LeNet.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from sparsetopo.errors import ConfigError

# Entries of a dense intermediate path-count block (rows x neurons) kept in memory at once.
_CHUNK_ENTRIES = 1 << 22
# Switch a sparse intermediate to dense above this fill.
_DENSE_FILL = 0.05
_INT_LIMIT = 1 << 62


def _as_bool_csr(layer: Any, where: str) -> sp.csr_array:
    """A canonical boolean CSR copy of ``layer`` (sparse matrix/array or dense 2-D array)."""
    if sp.issparse(layer):
        mat = sp.csr_array(layer)
    else:
        arr = np.asarray(layer)
        if arr.ndim != 2:
            raise ConfigError(f"{where}: expected a 2-D adjacency matrix, got an array of shape {arr.shape}")
        mat = sp.csr_array(arr)
    if mat.ndim != 2:
        raise ConfigError(f"{where}: expected a 2-D adjacency matrix, got shape {mat.shape}")
    mat = mat.astype(bool)
    mat.sum_duplicates()
    mat.eliminate_zeros()
    mat.sort_indices()
    mat.data = np.ones(mat.nnz, dtype=bool)
    return mat


def _canonical_csr(indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]) -> sp.csr_array:
    """A boolean CSR array from index arrays already sorted and duplicate-free within each row."""
    idx_dtype = np.int32 if max(shape[1], indices.shape[0]) < np.iinfo(np.int32).max else np.int64
    mat = sp.csr_array(
        (np.ones(indices.shape[0], dtype=bool), indices.astype(idx_dtype, copy=False),
         indptr.astype(idx_dtype, copy=False)),
        shape=shape,
    )
    mat.has_sorted_indices = True
    mat.has_canonical_format = True
    return mat


def _check_jsonable(obj: Any, where: str) -> dict:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: meta must be a dict, got {type(obj).__name__}")
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: meta must be JSON-serialisable ({exc})") from None


def kernel_adjacency(kernel_mask: np.ndarray) -> sp.csr_array:
    """The channel-level adjacency (in x out) of a weight-level conv mask (out x in x kh x kw)."""
    km = np.asarray(kernel_mask)
    if km.ndim != 4:
        raise ConfigError(f"kernel mask must be 4-D (out x in x kh x kw), got shape {km.shape}")
    return _as_bool_csr(km.astype(bool).any(axis=(2, 3)).T, "kernel mask")


def expand_kernel_mask(adjacency: Any, kernel_size: int | Sequence[int]) -> np.ndarray:
    """The weight-level conv mask (out x in x kh x kw) keeping every kernel position of each connected
    channel pair of ``adjacency`` (in_channels x out_channels)."""
    if isinstance(kernel_size, (int, np.integer)):
        kh = kw = int(kernel_size)
    else:
        ks = tuple(int(k) for k in kernel_size)
        if len(ks) != 2:
            raise ConfigError(f"kernel_size must be an int or (kh, kw), got {kernel_size!r}")
        kh, kw = ks
    if kh < 1 or kw < 1:
        raise ConfigError(f"kernel_size must be positive, got {kernel_size!r}")
    adj = _as_bool_csr(adjacency, "adjacency").toarray().T  # out x in
    return np.ascontiguousarray(np.broadcast_to(adj[:, :, None, None], adj.shape + (kh, kw)))


class Topology:
    """An ordered list of boolean layer adjacency matrices (input x output) with names, conv masks and meta.

    Parameters
    ----------
    layers: the adjacency of each layer, ``(n_in, n_out)``; any scipy sparse or dense 2-D array-like.
    names: optional layer names (unique strings), e.g. ``["conv1", "conv2", "fc1"]``.
    kernel_masks: optional per-layer weight-level conv masks (bool, ``out x in x kh x kw``) or ``None``
        for a fully-connected layer. When given, ``layers[i]`` must be the mask's channel-level "any".
    meta: JSON-able dict saying how the topology was made.
    """

    def __init__(
        self,
        layers: Sequence[Any],
        names: Sequence[str] | None = None,
        kernel_masks: Sequence[np.ndarray | None] | None = None,
        meta: dict | None = None,
    ) -> None:
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) and not hasattr(layers, "__iter__"):
            raise ConfigError(f"layers must be a list of adjacency matrices, got {type(layers).__name__}")
        mats = [_as_bool_csr(layer, f"layer {i}") for i, layer in enumerate(layers)]
        self._init(mats, names, kernel_masks, meta)

    @classmethod
    def _from_canonical(
        cls,
        layers: list[sp.csr_array],
        names: Sequence[str] | None = None,
        kernel_masks: Sequence[np.ndarray | None] | None = None,
        meta: dict | None = None,
    ) -> Topology:
        """Build from layers already in canonical boolean CSR form (skips the conversion copies)."""
        topo = cls.__new__(cls)
        topo._init(list(layers), names, kernel_masks, meta)
        return topo

    def _init(
        self,
        mats: list[sp.csr_array],
        names: Sequence[str] | None,
        kernel_masks: Sequence[np.ndarray | None] | None,
        meta: dict | None,
    ) -> None:
        if not mats:
            raise ConfigError("a topology needs at least one layer, got an empty list")
        for i, mat in enumerate(mats):
            if mat.shape[0] < 1 or mat.shape[1] < 1:
                raise ConfigError(f"layer {i}: shape {mat.shape} has an empty side")
        for i in range(len(mats) - 1):
            n_out, n_in = mats[i].shape[1], mats[i + 1].shape[0]
            if n_in % n_out != 0:
                raise ConfigError(
                    f"layers {i} and {i + 1} do not chain: layer {i} has {n_out} outputs but layer {i + 1} "
                    f"has {n_in} inputs (must be equal, or a multiple for a flattened conv output)"
                )
        if names is not None:
            names = list(names)
            if len(names) != len(mats):
                raise ConfigError(f"names has {len(names)} entries for {len(mats)} layers: {names!r}")
            for n in names:
                if not isinstance(n, str) or not n:
                    raise ConfigError(f"layer names must be non-empty strings, got {n!r}")
            if len(set(names)) != len(names):
                raise ConfigError(f"layer names must be unique, got {names!r}")
        masks: list[np.ndarray | None] = [None] * len(mats)
        if kernel_masks is not None:
            kernel_masks = list(kernel_masks)
            if len(kernel_masks) != len(mats):
                raise ConfigError(f"kernel_masks has {len(kernel_masks)} entries for {len(mats)} layers")
            for i, km in enumerate(kernel_masks):
                if km is None:
                    continue
                arr = np.asarray(km)
                if arr.ndim != 4:
                    raise ConfigError(f"layer {i}: kernel mask must be 4-D (out x in x kh x kw), got shape {arr.shape}")
                n_in, n_out = mats[i].shape
                if arr.shape[0] != n_out or arr.shape[1] != n_in:
                    raise ConfigError(
                        f"layer {i}: kernel mask shape {arr.shape} does not match the adjacency {mats[i].shape} "
                        f"(expected {n_out} x {n_in} x kh x kw)"
                    )
                if arr.shape[2] < 1 or arr.shape[3] < 1:
                    raise ConfigError(f"layer {i}: kernel mask shape {arr.shape} has an empty kernel")
                arr = np.ascontiguousarray(arr.astype(bool))
                derived = arr.any(axis=(2, 3)).T
                if (sp.csr_array(derived) != mats[i]).nnz:
                    raise ConfigError(f"layer {i}: the adjacency is not the channel-level 'any' of its kernel mask")
                masks[i] = arr
        self.layers: list[sp.csr_array] = mats
        self.names: list[str] | None = names
        self.kernel_masks: list[np.ndarray | None] = masks
        self.meta: dict = _check_jsonable(meta if meta is not None else {}, "topology")

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_weight_masks(
        cls, masks: Sequence[Any], names: Sequence[str] | None = None, meta: dict | None = None
    ) -> Topology:
        """Build from PyTorch-layout masks: ``out x in`` (linear) or ``out x in x kh x kw`` (conv)."""
        layers: list[np.ndarray] = []
        kms: list[np.ndarray | None] = []
        for i, m in enumerate(masks):
            arr = np.asarray(m).astype(bool)
            if arr.ndim == 2:
                layers.append(arr.T)
                kms.append(None)
            elif arr.ndim == 4:
                # a 4-D array reduced over two axes is an array; numpy's stubs also allow a scalar
                layers.append(cast(np.ndarray, arr.any(axis=(2, 3))).T)
                kms.append(arr)
            else:
                raise ConfigError(f"mask {i}: expected 2-D (out x in) or 4-D (out x in x kh x kw), got shape {arr.shape}")
        return cls(layers, names=names, kernel_masks=kms, meta=meta)

    def weight_mask(self, i: int) -> np.ndarray:
        """Layer ``i``'s dense weight mask in PyTorch layout (``out x in`` or ``out x in x kh x kw``)."""
        self._check_index(i)
        km = self.kernel_masks[i]
        if km is not None:
            return km.copy()
        return self.layers[i].toarray().T.copy()

    # ------------------------------------------------------------------ basic properties
    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{a}x{b}" for a, b in self.shapes)
        return f"Topology([{shapes}], nnz={self.total_nnz}, density={self.overall_density:.4g})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Topology):
            return NotImplemented
        if len(self) != len(other) or self.names != other.names or self.meta != other.meta:
            return False
        for a, b in zip(self.layers, other.layers):
            if a.shape != b.shape or (a != b).nnz:
                return False
        for a, maybe_b in zip(self.kernel_masks, other.kernel_masks):
            # past the first test, a is not None exactly when b is not None
            b = cast(np.ndarray, maybe_b)
            if (a is None) != (maybe_b is None) or (a is not None and (a.shape != b.shape or not np.array_equal(a, b))):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def _check_index(self, i: int) -> None:
        if not isinstance(i, (int, np.integer)) or not -len(self.layers) <= i < len(self.layers):
            raise ConfigError(f"layer index {i!r} out of range for {len(self.layers)} layers")

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [(int(m.shape[0]), int(m.shape[1])) for m in self.layers]

    @property
    def sizes(self) -> list[int]:
        """Neuron counts: the first layer's inputs, then each layer's outputs."""
        return [int(self.layers[0].shape[0])] + [int(m.shape[1]) for m in self.layers]

    @property
    def flatten_factors(self) -> list[int]:
        """For each junction between layers ``i`` and ``i+1``: inputs of ``i+1`` per output of ``i`` (1 = chained)."""
        return [self.layers[i + 1].shape[0] // self.layers[i].shape[1] for i in range(len(self.layers) - 1)]

    @property
    def nnz(self) -> list[int]:
        return [int(m.nnz) for m in self.layers]

    @property
    def density(self) -> list[float]:
        return [m.nnz / (m.shape[0] * m.shape[1]) for m in self.layers]

    @property
    def total_nnz(self) -> int:
        return sum(self.nnz)

    @property
    def overall_density(self) -> float:
        return self.total_nnz / sum(a * b for a, b in self.shapes)

    def in_degree_range(self, i: int) -> tuple[int, int]:
        """(min, max) number of inputs feeding an output neuron of layer ``i``."""
        self._check_index(i)
        m = self.layers[i]
        deg = np.bincount(m.indices, minlength=m.shape[1])
        return int(deg.min()), int(deg.max())

    def out_degree_range(self, i: int) -> tuple[int, int]:
        """(min, max) number of outputs fed by an input neuron of layer ``i``."""
        self._check_index(i)
        deg = np.diff(self.layers[i].indptr)
        return int(deg.min()), int(deg.max())

    # ------------------------------------------------------------------ paths
    def _path_layers(self, reverse: bool) -> list[sp.csr_array]:
        """The 0/1 int64 matrices whose product counts input-to-output paths (flatten junctions expanded)."""
        mats: list[sp.csr_array] = [self.layers[0].astype(np.int64)]
        for i, k in enumerate(self.flatten_factors):
            nxt = self.layers[i + 1].astype(np.int64)
            if k != 1:
                # unit u feeds inputs u*k .. u*k+k-1: fold the expansion into the next layer
                n_units = self.layers[i].shape[1]
                expand = sp.csr_array(
                    (np.ones(n_units * k, dtype=np.int64), np.arange(n_units * k), np.arange(0, n_units * k + 1, k)),
                    shape=(n_units, n_units * k),
                )
                nxt = sp.csr_array(expand @ nxt)
            mats.append(nxt)
        if reverse:
            mats = [sp.csr_array(m.T) for m in reversed(mats)]
        return mats

    def _propagate(self, clip: bool) -> Iterable[np.ndarray]:
        """Yield dense blocks of the path-count matrix (rows of the smaller end), chunk by chunk.

        With ``clip`` counts are clipped to 1 after each layer (reachability only). Counts that could
        exceed the int64 range are carried as float64 (then only approximate)."""
        reverse = self.layers[-1].shape[1] < self.layers[0].shape[0]
        mats = self._path_layers(reverse)
        widest = max(max(m.shape) for m in mats)
        chunk = max(1, _CHUNK_ENTRIES // widest)
        n_rows = mats[0].shape[0]
        in_max = [int(np.bincount(m.indices, minlength=m.shape[1]).max()) if m.nnz else 0 for m in mats]
        for start in range(0, n_rows, chunk):
            cur: Any = mats[0][start : start + chunk]
            cur_max = 1
            for m, deg in zip(mats[1:], in_max[1:]):
                if sp.issparse(cur) and cur.nnz > _DENSE_FILL * cur.shape[0] * cur.shape[1]:
                    cur = cur.toarray()
                if not clip and cur.dtype == np.int64 and cur_max * max(deg, 1) >= _INT_LIMIT:
                    cur = cur.astype(np.float64)
                    m = m.astype(np.float64)
                elif cur.dtype == np.float64:
                    m = m.astype(np.float64)
                cur = cur @ m
                if sp.issparse(cur):
                    cur = sp.csr_array(cur)
                    if clip:
                        cur.data[:] = 1
                    cur_max = int(cur.data.max()) if cur.nnz and cur.dtype == np.int64 else cur_max
                else:
                    if clip:
                        np.minimum(cur, 1, out=cur)
                        cur_max = 1
                    elif cur.dtype == np.int64:
                        cur_max = int(cur.max()) if cur.size else 0
            yield cur.toarray() if sp.issparse(cur) else np.asarray(cur)

    def path_count_cost(self) -> int:
        """Rough number of multiply-adds :meth:`path_counts` needs: the smaller end's width times the edges."""
        n_ends = min(self.layers[0].shape[0], self.layers[-1].shape[1])
        edges = self.total_nnz + sum(
            (k - 1) * self.layers[i + 1].nnz for i, k in enumerate(self.flatten_factors) if k > 1
        )
        return int(n_ends) * int(edges)

    def path_counts(self) -> tuple[int | float, int | float]:
        """(min, max) over all (input, output) pairs of the number of input-to-output paths.

        Computed as the product of the layers' 0/1 matrices, a block of rows at a time, so the full
        ``n_in x n_out`` count matrix is never held. Exact integers while they fit in int64; floats beyond."""
        lo: Any = None
        hi: Any = None
        for block in self._propagate(clip=False):
            if block.size == 0:
                continue
            bmin, bmax = block.min(), block.max()
            lo = bmin if lo is None else min(lo, bmin)
            hi = bmax if hi is None else max(hi, bmax)
        conv = int if np.issubdtype(np.asarray(lo).dtype, np.integer) and np.issubdtype(np.asarray(hi).dtype, np.integer) else float
        return conv(lo), conv(hi)

    def is_path_connected(self) -> bool:
        """True when every input neuron reaches every output neuron."""
        # an input feeding nothing, or an output fed by nothing, settles it without any products
        if self.out_degree_range(0)[0] == 0 or self.in_degree_range(len(self.layers) - 1)[0] == 0:
            return False
        return all(bool(block.min() > 0) for block in self._propagate(clip=True))

    def is_symmetric(self) -> bool:
        """True when every (input, output) pair is joined by the same number of paths."""
        lo, hi = self.path_counts()
        return lo == hi

    # ------------------------------------------------------------------ reports
    def summary(self) -> list[dict]:
        """One JSON-able dict per layer: name, shape, nnz, density, degree ranges, conv kernel."""
        rows = []
        for i, m in enumerate(self.layers):
            km = self.kernel_masks[i]
            rows.append(
                {
                    "index": i,
                    "name": self.names[i] if self.names else None,
                    "shape": [int(m.shape[0]), int(m.shape[1])],
                    "nnz": int(m.nnz),
                    "density": m.nnz / (m.shape[0] * m.shape[1]),
                    "in_degree": list(self.in_degree_range(i)),
                    "out_degree": list(self.out_degree_range(i)),
                    "kernel": None if km is None else [int(km.shape[2]), int(km.shape[3])],
                    "weights": int(m.nnz) if km is None else int(km.sum()),
                }
            )
        return rows
