"""The fast CPU inference engine (numba), exact against the scipy reference.

Each input row is independent of every other through all layers, so rows are processed in blocks of
``block`` rows (fewer, down to 4, when few rows are alive, so that each thread gets several blocks), one
block per thread task (dynamic scheduling), each block walking through the layers. Per
row and layer the engine picks the cheaper of two exact formulations:

* push (sparse rows): for each nonzero ``y_i``, scatter ``y_i * w`` into the 32 outputs of row ``i`` of the
  ELL table: ``nnz(y) * K`` updates;
* pull (dense rows): each output gathers its inputs ``y[tidx[l, j, :]]`` and sums them in registers, four
  outputs at a time (independent chains): ``N * K`` updates, no scattered stores.

Wide layers (``PULL8_MIN``, ``SKEW_MIN``) keep the working set in cache: dense rows are pulled eight at a time
from their transposed state (one contiguous load per input for the eight rows), and push sums are laid out
with a cache line of padding every 4 KiB, so that outputs a multiple of 4 KiB apart do not share a set of
the first-level cache.

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
# Push rows scatter into the sums of 32 outputs spread over the layer; in the generated RadiX-Nets those are
# N/16 apart, so from 16,384 neurons on they are a multiple of 4 KiB apart and fall into one set of the
# first-level cache, evicting each other. Above SKEW_MIN neurons the push sums are kept skewed: output j at
# j + (j >> SKEW_SHIFT) * 2**SKEW_PAD_SHIFT, one cache line more per 4 KiB of sums (SKEW_PAD_SHIFT is compiled
# into the kernels).
SKEW_MIN = 4096
SKEW_SHIFT = 10
SKEW_PAD_SHIFT = 4
# From this width on, dense rows are pulled eight at a time from their transposed state (``_pull_uniform8``);
# narrower, four at a time from their rows is as fast.
PULL8_MIN = 2048
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


@njit(cache=True)
def _pull_uniform(acc, yr, t, w):  # pragma: no cover - compiled
    """acc[j] = sum_k yr[t[j, k]] * w, terms in ascending k, four outputs interleaved."""
    n = t.shape[0]
    kt = t.shape[1]
    top = n - n % 4
    for j in range(0, top, 4):
        a = t[j]
        b = t[j + 1]
        c = t[j + 2]
        d = t[j + 3]
        s0 = yr[a[0]] * w
        s1 = yr[b[0]] * w
        s2 = yr[c[0]] * w
        s3 = yr[d[0]] * w
        for k in range(1, kt):
            s0 += yr[a[k]] * w
            s1 += yr[b[k]] * w
            s2 += yr[c[k]] * w
            s3 += yr[d[k]] * w
        acc[j] = s0
        acc[j + 1] = s1
        acc[j + 2] = s2
        acc[j + 3] = s3
    for j in range(top, n):
        s0 = yr[t[j, 0]] * w
        for k in range(1, kt):
            s0 += yr[t[j, k]] * w
        acc[j] = s0


@njit(cache=True)
def _pull_values(acc, yr, t, tv):  # pragma: no cover - compiled
    """acc[j] = sum_k yr[t[j, k]] * tv[j, k], terms in ascending k, four outputs interleaved."""
    n = t.shape[0]
    kt = t.shape[1]
    top = n - n % 4
    for j in range(0, top, 4):
        a = t[j]
        b = t[j + 1]
        c = t[j + 2]
        d = t[j + 3]
        va = tv[j]
        vb = tv[j + 1]
        vc = tv[j + 2]
        vd = tv[j + 3]
        s0 = yr[a[0]] * va[0]
        s1 = yr[b[0]] * vb[0]
        s2 = yr[c[0]] * vc[0]
        s3 = yr[d[0]] * vd[0]
        for k in range(1, kt):
            s0 += yr[a[k]] * va[k]
            s1 += yr[b[k]] * vb[k]
            s2 += yr[c[k]] * vc[k]
            s3 += yr[d[k]] * vd[k]
        acc[j] = s0
        acc[j + 1] = s1
        acc[j + 2] = s2
        acc[j + 3] = s3
    for j in range(top, n):
        s0 = yr[t[j, 0]] * tv[j, 0]
        for k in range(1, kt):
            s0 += yr[t[j, k]] * tv[j, k]
        acc[j] = s0


@njit(cache=True)
def _pull_uniform4(acc, y0, y1, y2, y3, t, w):  # pragma: no cover - compiled
    """Four rows at once: acc[q, j] = sum_k yq[t[j, k]] * w, two outputs interleaved (8 chains), so every
    index is loaded once for four rows."""
    n = t.shape[0]
    kt = t.shape[1]
    top = n - n % 2
    for j in range(0, top, 2):
        a = t[j]
        b = t[j + 1]
        i = a[0]
        s0 = y0[i] * w
        s1 = y1[i] * w
        s2 = y2[i] * w
        s3 = y3[i] * w
        i = b[0]
        r0 = y0[i] * w
        r1 = y1[i] * w
        r2 = y2[i] * w
        r3 = y3[i] * w
        for k in range(1, kt):
            i = a[k]
            s0 += y0[i] * w
            s1 += y1[i] * w
            s2 += y2[i] * w
            s3 += y3[i] * w
            i = b[k]
            r0 += y0[i] * w
            r1 += y1[i] * w
            r2 += y2[i] * w
            r3 += y3[i] * w
        acc[0, j] = s0
        acc[1, j] = s1
        acc[2, j] = s2
        acc[3, j] = s3
        acc[0, j + 1] = r0
        acc[1, j + 1] = r1
        acc[2, j + 1] = r2
        acc[3, j + 1] = r3
    for j in range(top, n):
        a = t[j]
        i = a[0]
        s0 = y0[i] * w
        s1 = y1[i] * w
        s2 = y2[i] * w
        s3 = y3[i] * w
        for k in range(1, kt):
            i = a[k]
            s0 += y0[i] * w
            s1 += y1[i] * w
            s2 += y2[i] * w
            s3 += y3[i] * w
        acc[0, j] = s0
        acc[1, j] = s1
        acc[2, j] = s2
        acc[3, j] = s3


@njit(cache=True)
def _transpose8(y, rows, yt):  # pragma: no cover - compiled
    """yt[j, q] = y[rows[q], j] for the eight rows ``rows`` (j = 0..N, the zero sentinel included)."""
    for q in range(8):
        yr = y[rows[q]]
        for j in range(yt.shape[0]):
            yt[j, q] = yr[j]


@njit(cache=True)
def _pull_uniform8(acct, yt, t, w):  # pragma: no cover - compiled
    """Eight rows at once from their transposed state ``yt`` (N+1, 8): acct[j, q] = sum_k yt[t[j, k], q] * w,
    terms in ascending k as in ``_pull_uniform``. Each index loads the eight rows' values as one contiguous
    32-byte piece, where ``_pull_uniform4`` makes four loads from four rows, which miss the cache once the
    rows outgrow it."""
    n = t.shape[0]
    kt = t.shape[1]
    for j in range(n):
        a = t[j]
        v = yt[a[0]]
        s0 = v[0] * w
        s1 = v[1] * w
        s2 = v[2] * w
        s3 = v[3] * w
        s4 = v[4] * w
        s5 = v[5] * w
        s6 = v[6] * w
        s7 = v[7] * w
        for k in range(1, kt):
            v = yt[a[k]]
            s0 += v[0] * w
            s1 += v[1] * w
            s2 += v[2] * w
            s3 += v[3] * w
            s4 += v[4] * w
            s5 += v[5] * w
            s6 += v[6] * w
            s7 += v[7] * w
        o = acct[j]
        o[0] = s0
        o[1] = s1
        o[2] = s2
        o[3] = s3
        o[4] = s4
        o[5] = s5
        o[6] = s6
        o[7] = s7


@njit(cache=True)
def _finalize_t(yr, acct, q, nzr, b, top):  # pragma: no cover - compiled
    """``_finalize`` from column q of the transposed sums ``acct`` (N, 8), which the next pull overwrites."""
    n = yr.shape[0] - 1
    zero = yr.dtype.type(0)
    for j in range(n):
        s = acct[j, q]
        u = s + b
        if u < zero:
            u = zero
        if u > top:
            u = top
        yr[j] = u if s != zero else zero
    c = 0
    for j in range(n):
        nzr[c] = j
        c += yr[j] > zero
    return c


@njit(cache=True)
def _finalize_skewed(yr, accs, nzr, b, top, sh):  # pragma: no cover - compiled
    """``_finalize`` from push sums ``accs`` in the skewed layout (output j at j + (j >> sh) << SKEW_PAD_SHIFT,
    the zero sentinel after the last); resets them."""
    n = yr.shape[0] - 1
    zero = yr.dtype.type(0)
    seg = 1 << sh
    for s0 in range(0, n, seg):
        off = (s0 >> sh) << SKEW_PAD_SHIFT
        for j in range(s0, min(n, s0 + seg)):
            s = accs[j + off]
            u = s + b
            if u < zero:
                u = zero
            if u > top:
                u = top
            yr[j] = u if s != zero else zero
            accs[j + off] = zero
    accs[n + ((n >> sh) << SKEW_PAD_SHIFT)] = zero
    c = 0
    for j in range(n):
        nzr[c] = j
        c += yr[j] > zero
    return c


@njit(cache=True)
def _finalize(yr, accr, nzr, b, top):  # pragma: no cover - compiled
    """yr[j] = clamp(accr[j] + b, 0, top) where accr[j] != 0, else 0; reset accr; list the nonzeros of yr
    (ascending) in nzr and return their count."""
    n = yr.shape[0] - 1
    zero = yr.dtype.type(0)
    for j in range(n):
        s = accr[j]
        u = s + b
        if u < zero:
            u = zero
        if u > top:
            u = top
        yr[j] = u if s != zero else zero
        accr[j] = zero
    accr[n] = zero
    c = 0
    for j in range(n):
        nzr[c] = j
        c += yr[j] > zero
    return c


@njit(cache=True, parallel=True)
def _run_layers(y, nz, nnz, rows, idx, tidx, vals, tvals, wl, l0, l1, bias, ymax, block, pull_min, sh, pull8):  # pragma: no cover
    """Advance the live ``rows`` of the state through layers l0..l1-1 in place.

    y: (B, N+1) activations, y[:, N] stays 0; nz: (B, N) ascending nonzero positions of each row; nnz: (B,)
    counts (0 = dead). idx: (L, N, K), tidx: (L, N, KT). vals/tvals: per-edge weights, or empty arrays when
    the layers are uniform with weight wl[l]. bias/ymax: 1-element arrays of y's dtype.
    """
    n = y.shape[1] - 1
    kw = idx.shape[2]
    uniform = vals.shape[0] == 0
    b = bias[0]
    top = ymax[0]
    nrows = rows.shape[0]
    nblocks = (nrows + block - 1) // block
    for blk in prange(nblocks):
        acc = np.zeros((4, n + 1), dtype=y.dtype)
        dense = np.empty(block, dtype=np.int64)
        use8 = pull8 and block >= 8
        yt = np.empty((n + 1 if use8 else 0, 8), dtype=y.dtype)
        acct = np.empty((n if use8 else 0, 8), dtype=y.dtype)
        accs = np.zeros(n + ((n >> sh) << SKEW_PAD_SHIFT) + 1 if sh > 0 else 0, dtype=y.dtype)
        lo = blk * block
        hi = min(lo + block, nrows)
        for l in range(l0, l1):
            live = 0
            ndense = 0
            w = wl[l]
            acc0 = acc[0]
            for t in range(lo, hi):
                r = rows[t]
                c = nnz[r]
                if c == 0:
                    continue
                live += 1
                yr = y[r]
                if c >= pull_min:
                    if uniform:
                        dense[ndense] = r       # pulled below, four rows at a time
                        ndense += 1
                        continue
                    _pull_values(acc0, yr, tidx[l], tvals[l])
                else:
                    # push: scatter the nonzeros (ascending) into their outputs
                    nzr = nz[r]
                    if uniform and sh > 0:
                        for q in range(c):
                            i = nzr[q]
                            v = yr[i] * w
                            for k in range(kw):
                                p = idx[l, i, k]
                                accs[p + ((p >> sh) << SKEW_PAD_SHIFT)] += v
                        nnz[r] = _finalize_skewed(yr, accs, nzr, b, top, sh)
                        continue
                    if uniform:
                        for q in range(c):
                            i = nzr[q]
                            v = yr[i] * w
                            for k in range(kw):
                                acc0[idx[l, i, k]] += v
                    else:
                        for q in range(c):
                            i = nzr[q]
                            v = yr[i]
                            for k in range(kw):
                                acc0[idx[l, i, k]] += v * vals[l, i, k]
                nnz[r] = _finalize(yr, acc0, nz[r], b, top)
            g = 0
            while use8 and g + 8 <= ndense:
                _transpose8(y, dense[g:g + 8], yt)
                _pull_uniform8(acct, yt, tidx[l], w)
                for q in range(8):
                    r = dense[g + q]
                    nnz[r] = _finalize_t(y[r], acct, q, nz[r], b, top)
                g += 8
            while g + 4 <= ndense:
                r0 = dense[g]
                r1 = dense[g + 1]
                r2 = dense[g + 2]
                r3 = dense[g + 3]
                _pull_uniform4(acc, y[r0], y[r1], y[r2], y[r3], tidx[l], w)
                nnz[r0] = _finalize(y[r0], acc[0], nz[r0], b, top)
                nnz[r1] = _finalize(y[r1], acc[1], nz[r1], b, top)
                nnz[r2] = _finalize(y[r2], acc[2], nz[r2], b, top)
                nnz[r3] = _finalize(y[r3], acc[3], nz[r3], b, top)
                g += 4
            while g < ndense:
                r = dense[g]
                _pull_uniform(acc0, y[r], tidx[l], w)
                nnz[r] = _finalize(y[r], acc0, nz[r], b, top)
                g += 1
            if live == 0:
                break


def skew_shift(neurons: int) -> int:
    """The push sums' skew shift for a layer width: ``SKEW_SHIFT`` above ``SKEW_MIN`` neurons, else 0 (none)."""
    return SKEW_SHIFT if neurons > SKEW_MIN else 0


def _block_for(live: int, block: int, threads: int) -> int:
    """Rows per thread task: ``block``, or fewer (not under 4, the rows a pull shares its index loads
    with) when the live rows would give fewer than four tasks per thread, so every thread has work."""
    if threads <= 1:
        return block
    return max(min(block, 4), min(block, -(-live // (4 * threads))))


def _schedule(n_layers: int, chunk: int) -> list[tuple[int, int]]:
    """Layer ranges: short ones first (1, 1, 2, 4, ... layers), since most rows die in the first layers and
    the live rows are compacted between ranges (so blocks hold live rows), then ranges of ``chunk``."""
    out = []
    l0, step = 0, 1
    while l0 < n_layers:
        l1 = min(n_layers, l0 + min(step, chunk))
        out.append((l0, l1))
        l0, step = l1, (step * 2 if l0 > 1 else 1)
    return out


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
    pull_fraction: float = 0.5,
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
    pull_min = max(1, math.ceil(pull_fraction * n))

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
                for l0, l1 in _schedule(network.n_layers, chunk):
                    if rows.size == 0:
                        break
                    idx = np.asarray(network.idx[l0:l1])
                    tidx = np.asarray(network.tidx[l0:l1])
                    if uniform:
                        vals = tvals = empty
                    else:
                        vals = np.asarray(network.values[l0:l1], dtype=dt)
                        tvals = np.asarray(network.tvalues[l0:l1], dtype=dt)
                    _run_layers(y, nz, nnz, rows, idx, tidx, vals, tvals, wl[l0:l1], 0, l1 - l0, bias, ymax,
                                _block_for(rows.size, block, nthreads), pull_min, skew_shift(n), n >= PULL8_MIN)
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
