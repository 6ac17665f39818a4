"""CPU kernels of the ``sparse`` backend (numba, compiled once and cached on disk).

Activations are handled *feature-major*: ``xt`` is ``(features, batch)`` with the batch contiguous, so
every connection does a contiguous multiply-add over the batch (vectorised), and a chain of sparse layers
passes its activations on without transposing. Every output element is computed by one thread in a fixed
order, so results are deterministic and independent of the number of threads.

* ``csr_spmm``: ``yt[r] = bias[r] + sum_k values[perm[k]] * xt[indices[k]]`` over row r's nonzeros (the
  forward with the CSR pattern; the input gradient with the transposed pattern and a value permutation).
* ``csr_sddmm``: ``out[k] = dot(gyt[row(k)], xt[indices[k]])``, the weight gradient at the nonzeros only.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import torch

_UNROLL = 4
_NO_PERM = np.zeros(0, dtype=np.int64)


@nb.njit(parallel=True, cache=True, fastmath=True, nogil=True)
def _spmm(indptr, indices, perm, use_perm, values, xt, bias, yt):  # pragma: no cover - numba
    rows = indptr.shape[0] - 1
    nb_ = xt.shape[1]
    for r in nb.prange(rows):
        acc = yt[r]
        b = bias[r]
        for j in range(nb_):
            acc[j] = b
        start = indptr[r]
        end = indptr[r + 1]
        k = start
        while k + _UNROLL <= end:
            if use_perm:
                w0 = values[perm[k]]
                w1 = values[perm[k + 1]]
                w2 = values[perm[k + 2]]
                w3 = values[perm[k + 3]]
            else:
                w0 = values[k]
                w1 = values[k + 1]
                w2 = values[k + 2]
                w3 = values[k + 3]
            x0 = xt[indices[k]]
            x1 = xt[indices[k + 1]]
            x2 = xt[indices[k + 2]]
            x3 = xt[indices[k + 3]]
            for j in range(nb_):
                acc[j] += w0 * x0[j] + w1 * x1[j] + w2 * x2[j] + w3 * x3[j]
            k += _UNROLL
        while k < end:
            w = values[perm[k]] if use_perm else values[k]
            x0 = xt[indices[k]]
            for j in range(nb_):
                acc[j] += w * x0[j]
            k += 1


@nb.njit(parallel=True, cache=True, fastmath=True, nogil=True)
def _sddmm(indptr, indices, gyt, xt, out):  # pragma: no cover - numba
    rows = indptr.shape[0] - 1
    nb_ = xt.shape[1]
    for r in nb.prange(rows):
        g = gyt[r]
        for k in range(indptr[r], indptr[r + 1]):
            x = xt[indices[k]]
            s = g[0] * x[0]
            for j in range(1, nb_):
                s += g[j] * x[j]
            out[k] = s


def set_threads() -> None:
    """Run numba kernels on as many threads as torch uses."""
    n = max(1, min(torch.get_num_threads(), nb.config.NUMBA_NUM_THREADS))
    if nb.get_num_threads() != n:
        nb.set_num_threads(n)


def spmm(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, xt: np.ndarray,
         bias: np.ndarray | None = None, perm: np.ndarray | None = None,
         out: np.ndarray | None = None) -> np.ndarray:
    """``(rows, batch)`` result of the CSR pattern times ``xt`` (``(cols, batch)``, C-contiguous)."""
    rows = indptr.shape[0] - 1
    if out is None:
        out = np.empty((rows, xt.shape[1]), dtype=xt.dtype)
    if xt.shape[1] == 0 or rows == 0:
        if bias is not None and rows:
            out[:] = bias[:, None]
        return out
    if bias is None:
        bias = np.zeros(rows, dtype=xt.dtype)
    set_threads()
    _spmm(indptr, indices, perm if perm is not None else _NO_PERM, perm is not None, values, xt, bias, out)
    return out


def sddmm(indptr: np.ndarray, indices: np.ndarray, gyt: np.ndarray, xt: np.ndarray,
          out: np.ndarray | None = None) -> np.ndarray:
    """Per-nonzero dot products of ``gyt[row]`` and ``xt[col]`` (both ``(n, batch)`` C-contiguous)."""
    if out is None:
        out = np.empty(indices.shape[0], dtype=xt.dtype)
    if indices.shape[0] == 0:
        return out
    if xt.shape[1] == 0:
        out[:] = 0
        return out
    set_threads()
    _sddmm(indptr, indices, gyt, xt, out)
    return out
