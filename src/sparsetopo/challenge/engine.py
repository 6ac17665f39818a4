"""The fast CPU inference engine (numba), exact against the scipy reference.

Each input row is independent of every other through all layers, so rows are processed in blocks of
``block`` rows, one block per thread task (dynamic scheduling), each block walking through the layers. Per
row and layer the engine picks the cheaper of two exact formulations:

* push (sparse rows): for each nonzero ``y_i``, scatter ``y_i * w`` into the 32 outputs of row ``i`` of the
  ELL table: ``nnz(y) * K`` updates;
* pull (dense rows): for each k, gather ``y[tidx[l, k, :]]`` over all outputs (a contiguous, vectorisable
  gather): ``N * K`` updates.

Both add each output's terms in ascending input order, the order of the reference's sorted CSR product, so
the results are bit for bit those of :func:`sparsetopo.challenge.reference.reference_infer` in the same
dtype. The bias is added only to nonzero sums, then the value is clamped to ``[0, ymax]``. A row with no
nonzero left is dead and skipped from then on (row compaction); a block stops when all its rows are dead.
Layers are processed in chunks over a batch of rows, so only one chunk of a large (memory-mapped) network
needs to be resident at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from sparsetopo.challenge.network import ChallengeNetwork
from sparsetopo.errors import ConfigError

# Memory for the per-batch activation state (values + nonzero lists) when no batch size is given.
_STATE_BYTES = 256 << 20
# Bytes of weight tables per layer chunk (a chunk is made resident while the batch goes through it).
_CHUNK_BYTES = 512 << 20
DTYPES = {"float32": np.float32, "float64": np.float64}


@njit(cache=True, parallel=True)
def _load_rows(y, nz, nnz, indptr, indices, data, first):  # pragma: no cover - compiled
    """Fill the dense state rows 0..B-1 from CSR rows first..first+B-1 of the inputs."""
    b = y.shape[0]
    n = y.shape[1] - 1
    for r in prange(b):
        for j in range(n + 1):
            y[r, j] = 0
        lo = indptr[first + r]
        hi = indptr[first + r + 1]
        c = 0
        for t in range(lo, hi):
            j = indices[t]
            y[r, j] = data[t]
            nz[r, c] = j
            c += 1
        nnz[r] = c


@njit(cache=True, parallel=True)
def _run_layers(y, nz, nnz, rows, idx, tidx, vals, tvals, wl, l0, l1, bias, ymax, block, pull_min):  # pragma: no cover
    """Advance the live ``rows`` of the state through layers l0..l1-1 in place.

    y: (B, N+1) activations, y[:, N] stays 0; nz: (B, N) ascending nonzero positions of each row; nnz: (B,)
    counts (0 = dead). idx: (L, N, K), tidx: (L, KT, N). vals/tvals: per-edge weights, or empty arrays when
    the layers are uniform with weight wl[l]. bias/ymax: 1-element arrays of y's dtype.
    """
    n = y.shape[1] - 1
    kw = idx.shape[2]
    kt = tidx.shape[1]
    uniform = vals.shape[0] == 0
    b = bias[0]
    top = ymax[0]
    zero = y.dtype.type(0)
    nrows = rows.shape[0]
    nblocks = (nrows + block - 1) // block
    for blk in prange(nblocks):
        acc = np.zeros(n + 1, dtype=y.dtype)
        lo = blk * block
        hi = min(lo + block, nrows)
        for l in range(l0, l1):
            live = 0
            w = wl[l]
            for t in range(lo, hi):
                r = rows[t]
                c = nnz[r]
                if c == 0:
                    continue
                live += 1
                yr = y[r]
                if c >= pull_min:
                    # pull: every output gathers its inputs; k-major keeps each output's order ascending
                    if uniform:
                        for j in range(n):
                            acc[j] = yr[tidx[l, 0, j]] * w
                        for k in range(1, kt):
                            for j in range(n):
                                acc[j] += yr[tidx[l, k, j]] * w
                    else:
                        for j in range(n):
                            acc[j] = yr[tidx[l, 0, j]] * tvals[l, 0, j]
                        for k in range(1, kt):
                            for j in range(n):
                                acc[j] += yr[tidx[l, k, j]] * tvals[l, k, j]
                else:
                    # push: scatter the nonzeros (ascending) into their outputs
                    nzr = nz[r]
                    if uniform:
                        for q in range(c):
                            i = nzr[q]
                            v = yr[i] * w
                            for k in range(kw):
                                acc[idx[l, i, k]] += v
                    else:
                        for q in range(c):
                            i = nzr[q]
                            v = yr[i]
                            for k in range(kw):
                                acc[idx[l, i, k]] += v * vals[l, i, k]
                # bias on nonzero sums only, clamp, reset the accumulator
                for j in range(n):
                    s = acc[j]
                    u = s + b
                    if u < zero:
                        u = zero
                    if u > top:
                        u = top
                    yr[j] = u if s != zero else zero
                    acc[j] = zero
                acc[n] = zero
                nzr = nz[r]
                c = 0
                for j in range(n):
                    nzr[c] = j
                    c += yr[j] > zero
                nnz[r] = c
            if live == 0:
                break


@dataclass
class InferenceResult:
    """Which inputs survive all layers, and optionally their final activations."""

    categories: np.ndarray                  # 1-based indices of the inputs whose final row is nonzero
    n_inputs: int
    activations: sp.csr_array | None = None  # final Y (n_inputs x N), when asked for


def _check_inputs(network: ChallengeNetwork, inputs: sp.csr_array) -> sp.csr_array:
    if not sp.issparse(inputs):
        raise ConfigError(f"inputs must be a scipy sparse matrix, got {type(inputs).__name__}")
    mat = sp.csr_array(inputs)
    if mat.ndim != 2 or mat.shape[1] != network.neurons:
        raise ConfigError(f"inputs have {mat.shape[1]} columns; the network has {network.neurons} neurons")
    mat.sum_duplicates()
    mat.sort_indices()
    return mat


def resolve_threads(threads: int | None) -> int:
    """The thread count to use: ``threads`` if given (1..numba's maximum), else numba's maximum."""
    most = int(numba.config.NUMBA_NUM_THREADS)
    if threads is None:
        return most
    if not 1 <= int(threads) <= most:
        raise ConfigError(f"threads must be in 1..{most} (the cores numba may use), got {threads}")
    return int(threads)


def infer(
    network: ChallengeNetwork,
    inputs: sp.csr_array,
    *,
    threads: int | None = None,
    batch: int | None = None,
    dtype: str | type = "float32",
    block: int = 16,
    pull_fraction: float = 0.25,
    return_activations: bool = False,
) -> InferenceResult:
    """Run the challenge inference ``Y <- min(max(Y W + b, 0), ymax)`` (bias on nonzeros) over all layers.

    ``batch`` rows are held in the dense activation state at a time (default: as many as fit in 256 MiB);
    ``block`` rows form one thread task; a row switches from push to pull once its nonzeros exceed
    ``pull_fraction * N``. ``return_activations`` also returns the final rows (memory n_inputs x N).
    """
    dt = np.dtype(DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConfigError(f"dtype must be float32 or float64, got {dtype}")
    mat = _check_inputs(network, inputs)
    n = network.neurons
    n_in = mat.shape[0]
    nthreads = resolve_threads(threads)
    if block < 1:
        raise ConfigError(f"block must be >= 1, got {block}")
    if not 0.0 <= pull_fraction <= 1.0:
        raise ConfigError(f"pull_fraction must be in [0, 1], got {pull_fraction}")
    itype = network.idx.dtype
    row_bytes = (n + 1) * dt.itemsize + n * itype.itemsize
    if batch is None:
        batch = max(1, min(n_in, _STATE_BYTES // row_bytes))
    elif batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    batch = max(1, min(batch, n_in))
    pull_min = max(1, int(math.ceil(pull_fraction * n)))

    layer_bytes = network.idx[0].nbytes + network.tidx[0].nbytes
    if network.values is not None:
        layer_bytes *= 1 + dt.itemsize // itype.itemsize
    chunk = max(1, _CHUNK_BYTES // max(1, layer_bytes))
    uniform = network.weight is not None
    wl = (np.asarray(network.weight, dtype=dt) if uniform else np.zeros(network.n_layers, dtype=dt))
    empty = np.zeros((0, 0, 0), dtype=dt)
    bias = np.array([network.bias], dtype=dt)
    ymax = np.array([network.ymax], dtype=dt)
    indptr = mat.indptr.astype(np.int64)
    indices = mat.indices.astype(itype)
    data = mat.data.astype(dt)

    y = np.empty((batch, n + 1), dtype=dt)
    nz = np.empty((batch, n), dtype=itype)
    nnz = np.empty(batch, dtype=np.int64)
    alive = np.zeros(n_in, dtype=bool)
    out_rows: list[np.ndarray] = []
    out_vals: list[np.ndarray] = []
    previous = numba.get_num_threads()
    numba.set_num_threads(nthreads)
    try:
        with numba.parallel_chunksize(1):
            for first in range(0, n_in, batch):
                b = min(batch, n_in - first)
                _load_rows(y[:b], nz[:b], nnz[:b], indptr, indices, data, first)
                rows = np.flatnonzero(nnz[:b]).astype(np.int64)
                for l0 in range(0, network.n_layers, chunk):
                    if rows.size == 0:
                        break
                    l1 = min(network.n_layers, l0 + chunk)
                    idx = np.asarray(network.idx[l0:l1])
                    tidx = np.asarray(network.tidx[l0:l1])
                    if uniform:
                        vals = tvals = empty
                    else:
                        vals = np.asarray(network.values[l0:l1], dtype=dt)
                        tvals = np.asarray(network.tvalues[l0:l1], dtype=dt)
                    _run_layers(y, nz, nnz, rows, idx, tidx, vals, tvals, wl[l0:l1], 0, l1 - l0, bias, ymax,
                                block, pull_min)
                    rows = rows[nnz[rows] > 0]
                alive[first + rows] = True
                if return_activations and rows.size:
                    out_rows.append(first + rows)
                    out_vals.append(y[rows, :n].copy())
    finally:
        numba.set_num_threads(previous)
    activations = None
    if return_activations:
        dense_rows = np.concatenate(out_rows) if out_rows else np.zeros(0, dtype=np.int64)
        block_vals = np.concatenate(out_vals) if out_vals else np.zeros((0, n), dtype=dt)
        coo = sp.coo_array(block_vals)
        activations = sp.csr_array((coo.data, (dense_rows[coo.row], coo.col)), shape=(n_in, n))
        activations.sort_indices()
    return InferenceResult(np.flatnonzero(alive) + 1, n_in, activations)
