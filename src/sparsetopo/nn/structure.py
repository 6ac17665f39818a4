"""Connection structures of sparse layers, held as CSR index arrays (never a dense mask unless asked).

A layer's structure is the CSR pattern of its weight flattened to ``(rows, cols)``: ``rows`` = output
features (or output channels), ``cols`` = input features (or ``in_channels * kh * kw`` for a convolution,
in PyTorch's weight order). Column indices are sorted within each row, so the nonzeros are in row-major
order: the same order as ``weight[mask]`` on the dense weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import scipy.sparse as sp
import torch

from sparsetopo.errors import ConfigError

MaskLike = Union[torch.Tensor, np.ndarray, "sp.spmatrix", "sp.sparray"]

INDEX_DTYPE = np.int32  # column indices; row pointers are int64


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _dense_to_csr(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR pattern (indptr int64, indices int32) of the nonzeros of a 2-D array, in row-major order."""
    rows, cols = arr.shape
    flat = np.flatnonzero(arr.reshape(-1))
    indices = (flat % cols).astype(INDEX_DTYPE) if cols else np.zeros(0, INDEX_DTYPE)
    row_of = flat // cols if cols else flat
    counts = np.bincount(row_of, minlength=rows) if rows else np.zeros(0, np.int64)
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, indices


def _scipy_to_csr(mat: Any) -> tuple[np.ndarray, np.ndarray]:
    csr = sp.csr_array(mat, copy=True)
    csr.sum_duplicates()
    csr.data = csr.data != 0
    csr.eliminate_zeros()
    csr.sort_indices()
    return csr.indptr.astype(np.int64), csr.indices.astype(INDEX_DTYPE)


def _as_array(mask: Any, what: str) -> np.ndarray | Any:
    """A dense numpy view of a torch/numpy mask, or the scipy sparse object unchanged."""
    if sp.issparse(mask):
        return mask
    if isinstance(mask, torch.Tensor):
        if mask.is_sparse or mask.layout != torch.strided:
            return sp.csr_array(mask.detach().to_dense().cpu().numpy())
        return mask.detach().cpu().numpy()
    if isinstance(mask, np.ndarray):
        return mask
    raise ConfigError(
        f"{what}: mask must be a bool torch tensor, a numpy array or a scipy sparse matrix, "
        f"got {type(mask).__name__}"
    )


def _check_values(arr: np.ndarray, what: str) -> None:
    if arr.dtype == np.bool_:
        return
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ConfigError(f"{what}: mask dtype {arr.dtype} is not bool or numeric")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ConfigError(f"{what}: mask holds NaN or infinite values")


def linear_structure(mask: MaskLike, out_features: int, in_features: int,
                     what: str = "SparseLinear") -> tuple[np.ndarray, np.ndarray]:
    """CSR pattern of a linear layer's mask, shape ``(out_features, in_features)`` (PyTorch layout)."""
    arr = _as_array(mask, what)
    expected = (out_features, in_features)
    if tuple(arr.shape) != expected:
        hint = ""
        if tuple(arr.shape) == expected[::-1]:
            hint = (" (that is the transposed, input x output layout of a Topology layer: "
                    "pass its transpose, e.g. topo.layers[i].T)")
        raise ConfigError(
            f"{what}: mask shape {_shape_str(arr.shape)} does not match the weight shape "
            f"{_shape_str(expected)} (out_features x in_features){hint}"
        )
    if sp.issparse(arr):
        return _scipy_to_csr(arr)
    _check_values(arr, what)
    return _dense_to_csr(arr)


def conv_structure(mask: MaskLike, out_channels: int, in_channels: int, kernel: tuple[int, int],
                   what: str = "SparseConv2d") -> tuple[np.ndarray, np.ndarray]:
    """CSR pattern over ``(out_channels, in_channels * kh * kw)`` of a conv mask.

    ``mask`` is either a channel mask ``(out_channels, in_channels)`` (every kernel position of a connected
    channel pair is kept) or a full weight-shaped mask ``(out_channels, in_channels, kh, kw)``.
    """
    arr = _as_array(mask, what)
    kk = kernel[0] * kernel[1]
    channel_shape = (out_channels, in_channels)
    full_shape = (out_channels, in_channels, kernel[0], kernel[1])
    shape = tuple(arr.shape)
    if shape == channel_shape:
        if sp.issparse(arr):
            ip, ix = _scipy_to_csr(arr)
        else:
            _check_values(arr, what)
            ip, ix = _dense_to_csr(arr)
        return expand_channel_structure(ip, ix, kk)
    if shape == full_shape and not sp.issparse(arr):
        _check_values(arr, what)
        return _dense_to_csr(arr.reshape(out_channels, in_channels * kk))
    raise ConfigError(
        f"{what}: mask shape {_shape_str(shape)} matches neither the channel mask shape "
        f"{_shape_str(channel_shape)} (out_channels x in_channels) nor the weight shape "
        f"{_shape_str(full_shape)}"
    )


def expand_channel_structure(indptr: np.ndarray, indices: np.ndarray,
                             kk: int) -> tuple[np.ndarray, np.ndarray]:
    """Element CSR pattern of a channel CSR pattern whose every entry is a block of ``kk`` columns."""
    el_indices = (indices.astype(np.int64)[:, None] * kk + np.arange(kk)).reshape(-1)
    return indptr.astype(np.int64) * kk, el_indices.astype(INDEX_DTYPE)


def channel_pattern(indptr: np.ndarray, indices: np.ndarray,
                    kk: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The channel CSR pattern if the element pattern keeps whole channel pairs, else None."""
    if kk == 1:
        return indptr, indices
    if indptr[-1] % kk or np.any(np.diff(indptr) % kk):
        return None
    blocks = indices.reshape(-1, kk).astype(np.int64)
    first = blocks[:, 0]
    if np.any(first % kk) or np.any(blocks - first[:, None] != np.arange(kk)):
        return None
    return indptr // kk, (first // kk).astype(INDEX_DTYPE)


def structure_to_dense(indptr: np.ndarray, indices: np.ndarray, cols: int) -> np.ndarray:
    """Dense bool ``(rows, cols)`` array of a CSR pattern."""
    rows = len(indptr) - 1
    out = np.zeros((rows, cols), dtype=bool)
    row_of = np.repeat(np.arange(rows), np.diff(indptr))
    out[row_of, indices] = True
    return out


def row_of_nonzeros(indptr: np.ndarray) -> np.ndarray:
    """Row index of every nonzero of a CSR pattern (int64)."""
    return np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))


def same_structure(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return (len(a[0]) == len(b[0]) and len(a[1]) == len(b[1])
            and bool(np.array_equal(a[0], b[0])) and bool(np.array_equal(a[1], b[1])))


def describe_difference(old: tuple[np.ndarray, np.ndarray], new: tuple[np.ndarray, np.ndarray],
                        cols: int) -> str:
    """A short human description of how two patterns of the same shape differ."""
    if len(old[0]) != len(new[0]):
        return f"{len(old[0]) - 1} rows vs {len(new[0]) - 1} rows"
    key_old = row_of_nonzeros(old[0]) * cols + old[1]
    key_new = row_of_nonzeros(new[0]) * cols + new[1]
    only_old = np.setdiff1d(key_old, key_new, assume_unique=True).size
    only_new = np.setdiff1d(key_new, key_old, assume_unique=True).size
    return (f"{len(key_old)} connections vs {len(key_new)}; {only_old} only in the first, "
            f"{only_new} only in the second")
