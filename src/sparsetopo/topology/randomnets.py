"""Random sparse topologies: Erdős–Rényi (Bernoulli), exact edge count, and fixed fan-in layers.

Edges are placed by sampling distinct indices, so no dense random matrix is ever built: memory and
time scale with the number of edges, not with ``n_in * n_out``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from sparsetopo.errors import ConfigError
from sparsetopo.topology.core import Topology, _canonical_csr, expand_kernel_mask

MODES = ("bernoulli", "exact", "fanin")
# Use a bitmap of the population for distinct sampling up to this many candidate positions.
_BITMAP_LIMIT = 1 << 27
# Random keys drawn at once by the dense fan-in sampler.
_KEY_BLOCK = 1 << 21


def _check_seed(seed: Any) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values of ``a`` (sort-based; faster here than numpy's hash-based unique)."""
    a = np.sort(a)
    if a.shape[0] < 2:
        return a
    keep = np.empty(a.shape[0], dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _sample_distinct(rng: np.random.Generator, population: int, k: int) -> np.ndarray:
    """``k`` distinct integers drawn uniformly from ``0..population-1``, sorted (int64)."""
    if k < 0 or k > population:
        raise ConfigError(f"cannot draw {k} distinct positions out of {population}")
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k == population:
        return np.arange(population, dtype=np.int64)
    if 2 * k > population:
        # draw the complement (fewer positions), then invert
        drop = _sample_distinct(rng, population, population - k)
        keep = np.ones(population, dtype=bool)
        keep[drop] = False
        return np.flatnonzero(keep).astype(np.int64)
    if population <= _BITMAP_LIMIT:
        taken = np.zeros(population, dtype=bool)
        have = 0
        while have < k:
            draw = rng.integers(0, population, size=k - have, dtype=np.int64)
            draw = _sorted_unique(draw)
            draw = draw[~taken[draw]]
            taken[draw] = True
            have += draw.shape[0]
        return np.flatnonzero(taken).astype(np.int64)
    chosen = np.zeros(0, dtype=np.int64)
    while chosen.shape[0] < k:
        draw = rng.integers(0, population, size=k - chosen.shape[0], dtype=np.int64)
        chosen = _sorted_unique(np.concatenate([chosen, draw]))
    return chosen


def _sample_rows(rng: np.random.Generator, n_rows: int, n: int, d: int) -> np.ndarray:
    """An ``n_rows x d`` array whose rows are sorted sets of ``d`` distinct values of ``0..n-1``."""
    if d == n:
        return np.broadcast_to(np.arange(n, dtype=np.int64), (n_rows, n)).copy()
    if 2 * d > n:
        drop = _sample_rows(rng, n_rows, n, n - d)
        keep = np.ones((n_rows, n), dtype=bool)
        keep[np.arange(n_rows)[:, None], drop] = False
        return np.nonzero(keep)[1].reshape(n_rows, d).astype(np.int64)
    if 8 * d >= n:
        # a sizeable fraction of each row: take the d smallest of n random keys, a block of rows at a time
        out = np.empty((n_rows, d), dtype=np.int64)
        step = max(1, _KEY_BLOCK // n)
        for start in range(0, n_rows, step):
            keys = rng.random((min(step, n_rows - start), n))
            pick = np.argpartition(keys, d - 1, axis=1)[:, :d]
            pick.sort(axis=1)
            out[start : start + step] = pick
        return out
    # few per row: draw with replacement, then redraw duplicates (rare at d < n / 8) until none remain
    rows = rng.integers(0, n, size=(n_rows, d), dtype=np.int64)
    rows.sort(axis=1)
    todo = np.arange(n_rows)  # rows that may still hold duplicates
    while todo.shape[0]:
        sub = rows[todo]
        dup = np.zeros(sub.shape, dtype=bool)
        np.equal(sub[:, 1:], sub[:, :-1], out=dup[:, 1:])
        bad = dup.any(axis=1)
        if not bad.any():
            break
        todo, sub, dup = todo[bad], sub[bad], dup[bad]
        sub[dup] = rng.integers(0, n, size=int(dup.sum()), dtype=np.int64)
        sub.sort(axis=1)
        rows[todo] = sub
    return rows


def _positions_to_csr(pos: np.ndarray, n_in: int, n_out: int) -> sp.csr_array:
    """Sorted flat positions (row-major over n_in x n_out) to a boolean CSR array."""
    rows = pos // n_out
    cols = pos % n_out
    indptr = np.zeros(n_in + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_in), out=indptr[1:])
    return _canonical_csr(cols, indptr, (n_in, n_out))


def _exact_layer(rng: np.random.Generator, n_in: int, n_out: int, k: int) -> sp.csr_array:
    return _positions_to_csr(_sample_distinct(rng, n_in * n_out, k), n_in, n_out)


def _bernoulli_layer(rng: np.random.Generator, n_in: int, n_out: int, p: float) -> sp.csr_array:
    k = int(rng.binomial(n_in * n_out, p))
    return _exact_layer(rng, n_in, n_out, k)


def _fanin_layer(rng: np.random.Generator, n_in: int, n_out: int, d: int) -> sp.csr_array:
    chosen = _sample_rows(rng, n_out, n_in, d)  # n_out x d, sorted rows: the inputs of each output
    # that is the CSR form of the transpose (output x input); transpose it into input x output CSR
    indptr = np.arange(0, n_out * d + 1, d, dtype=np.int64)
    return sp.csr_array(_canonical_csr(chosen.reshape(-1), indptr, (n_out, n_in)).T.tocsr())


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _normalize_sizes(sizes: Any) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise ConfigError(f"sizes must be a list of at least two layer widths, got {sizes!r}")
    if len(sizes) < 2:
        raise ConfigError(f"sizes must list at least two layer widths (inputs and outputs), got {list(sizes)!r}")
    out = []
    for s in sizes:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ConfigError(f"layer width {s!r} in sizes {list(sizes)!r} must be a positive integer")
        out.append(int(s))
    return out


def _normalize_density(density: Any, n_layers: int) -> list[float]:
    if isinstance(density, (int, float, np.integer, np.floating)) and not isinstance(density, (bool, np.bool_)):
        values = [float(density)] * n_layers
    elif isinstance(density, Sequence) and not isinstance(density, (str, bytes)):
        if len(density) != n_layers:
            raise ConfigError(f"density {list(density)!r} has {len(density)} values for {n_layers} layers")
        values = []
        for d in density:
            if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, float, np.integer, np.floating)):
                raise ConfigError(f"density {d!r} must be a number in (0, 1]")
            values.append(float(d))
    else:
        raise ConfigError(f"density must be a number in (0, 1] or one per layer, got {density!r}")
    for d in values:
        if not (0.0 < d <= 1.0) or math.isnan(d):
            raise ConfigError(f"density {d!r} is outside (0, 1]")
    return values


def random_topology(sizes: Sequence[int], density: float | Sequence[float], seed: int, mode: str = "bernoulli") -> Topology:
    """A random sparse topology with layer widths ``sizes``.

    ``mode``: ``"bernoulli"`` (each edge independently with probability ``density``), ``"exact"``
    (exactly ``density * n_in * n_out`` edges, rounded half up, uniformly placed) or ``"fanin"`` (every output
    neuron gets exactly ``density * n_in`` distinct inputs, rounded half up). ``density`` is one float or one per
    layer. The same ``seed`` gives the same topology.
    """
    sizes_l = _normalize_sizes(sizes)
    n_layers = len(sizes_l) - 1
    dens = _normalize_density(density, n_layers)
    seed_i = _check_seed(seed)
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    counts = []
    for i, d in enumerate(dens):
        n_in, n_out = sizes_l[i], sizes_l[i + 1]
        if mode == "exact":
            k = _round_half_up(d * n_in * n_out)
            if k == 0:
                raise ConfigError(f"density {d!r} gives no edges in layer {i} ({n_in}x{n_out})")
            counts.append(k)
        elif mode == "fanin":
            k = _round_half_up(d * n_in)
            if k == 0:
                raise ConfigError(f"density {d!r} gives fan-in 0 in layer {i} ({n_in} inputs)")
            counts.append(k)
        else:
            counts.append(0)
    rng = np.random.default_rng(seed_i)
    layers = []
    for i, d in enumerate(dens):
        n_in, n_out = sizes_l[i], sizes_l[i + 1]
        if mode == "exact":
            layers.append(_exact_layer(rng, n_in, n_out, counts[i]))
        elif mode == "fanin":
            layers.append(_fanin_layer(rng, n_in, n_out, counts[i]))
        else:
            layers.append(_bernoulli_layer(rng, n_in, n_out, d))
    meta = {"kind": "random", "mode": mode, "sizes": sizes_l, "density": dens, "seed": seed_i}
    return Topology._from_canonical(layers, meta=meta)


def random_equivalent(topo: Topology, seed: int) -> Topology:
    """A random topology with ``topo``'s layer shapes and the same nnz per layer (uniform placement).

    A conv layer whose kernel mask keeps every kernel position of its connected channel pairs gets the
    same kind of mask over its random channel pairs; any other kernel mask is replaced by a uniformly
    random weight-level mask with the same number of nonzero weights."""
    _check_seed(seed)
    rng = np.random.default_rng(seed)
    layers, kms = [], []
    for i, m in enumerate(topo.layers):
        km = topo.kernel_masks[i]
        full = km is not None and int(km.sum()) == m.nnz * km.shape[2] * km.shape[3]
        if km is None or full:
            adj = _exact_layer(rng, m.shape[0], m.shape[1], m.nnz)
            layers.append(adj)
            kms.append(None if km is None else expand_kernel_mask(adj, km.shape[2:]))
        else:
            pos = _sample_distinct(rng, km.size, int(km.sum()))
            new: np.ndarray = np.zeros(km.size, dtype=bool)
            new[pos] = True
            new = new.reshape(km.shape)
            layers.append(new.any(axis=(2, 3)).T)
            kms.append(new)
    meta = {"kind": "random_equivalent", "seed": int(seed), "of": topo.meta}
    return Topology(layers, names=topo.names, kernel_masks=kms, meta=meta)


def relabel_units(topo: Topology, seed: int) -> Topology:
    """The same graph with its units randomly renamed: a random permutation of the inputs and of each
    layer's outputs (the next layer's inputs get the same one). Every degree, path count and connectivity
    property is kept; only which input pixel or hidden unit plays which role in the structure changes."""
    _check_seed(seed)
    if any(km is not None for km in topo.kernel_masks):
        raise ConfigError("relabelling units needs a topology without weight-level (conv) masks")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(topo.layers[0].shape[0])
    layers = []
    for m in topo.layers:
        out = rng.permutation(m.shape[1])
        rows, cols = m.nonzero()
        new = sp.csr_array((np.ones(rows.size, dtype=bool), (perm[rows], out[cols])), shape=m.shape)
        layers.append(new)
        perm = out
    return Topology(layers, names=topo.names, meta={"kind": "relabelled", "seed": int(seed), "of": topo.meta})


def erk_densities(weight_shapes: Sequence[Sequence[int]], density: float) -> list[float]:
    """Per-layer densities of the Erdős–Rényi-Kernel distribution (Evci et al. 2020, RigL) for layers whose
    weights have the given shapes (``(out, in)`` or ``(out, in, kh, kw)``), so that all of them together
    hold ``density`` of their weights.

    A layer's density is proportional to ``sum(shape) / prod(shape)``: small and narrow layers keep more of
    their weights than wide ones. A layer that would exceed density 1 is made dense and the others share
    the rest, as in RigL's reference code.
    """
    shapes = [tuple(int(s) for s in shape) for shape in weight_shapes]
    if not shapes or any(len(s) not in (2, 4) or min(s) < 1 for s in shapes):
        raise ConfigError(f"ERK needs weight shapes (out, in) or (out, in, kh, kw) of positive sizes, got {shapes}")
    if not 0 < density <= 1:
        raise ConfigError(f"ERK density {density!r} must be in (0, 1]")
    sizes = np.array([math.prod(s) for s in shapes], dtype=np.float64)
    scores = np.array([sum(s) / math.prod(s) for s in shapes], dtype=np.float64)
    dense = np.zeros(len(shapes), dtype=bool)
    while True:
        budget = density * sizes.sum() - sizes[dense].sum()  # weights left for the layers not yet dense
        eps = budget / float((scores * sizes)[~dense].sum())
        over = ~dense & (eps * scores > 1.0)
        if not over.any():
            break
        dense |= over
    return [1.0 if d else float(min(1.0, eps * s)) for d, s in zip(dense, scores)]
