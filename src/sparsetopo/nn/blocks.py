"""Block structure hidden in a mask, and the block kernel that exploits it (RadiX-Nets).

A RadiX-Net layer is ``ones(B_in, B_out) kron A`` with ``A`` a sum of cyclic shifts: every output neuron
``o`` has the same inputs as the outputs ``o +- N'``, and likewise for inputs. Grouping rows with identical
column sets and columns with identical row sets turns such a mask into a block-sparse matrix with dense
``bo x bi`` blocks. The detection works from the mask alone (no RadiX parameters needed), so any mask
with that property (RadiX, kron-expanded, channel-structured) gets the block kernel.

The kernel gathers each block row's input groups once and multiplies with ``torch.bmm`` (dense GEMMs on
``bo x (m bi)`` weight panels), so every input row read from memory is used ``bo`` times, where the CSR
kernel uses it once per nonzero. The input gradient sums the per-block contributions of each input group
in a fixed order (deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sparsetopo.nn import kernels
from sparsetopo.nn import structure as st


@dataclass
class BlockPlan:
    """A uniform block structure: G row groups of ``bo`` rows, each joined to ``m`` column groups."""

    rows: int
    cols: int
    bo: int
    bi: int
    m: int
    row_perm: torch.Tensor     # (G*bo,) original row of each permuted row
    gather_cols: torch.Tensor  # (G*m*bi,) original column per panel column (padding: 0, zero weight)
    value_index: torch.Tensor  # (G*bo*m*bi,) CSR position of each panel weight (``nnz`` = padding zero)
    inverse: torch.Tensor      # (nnz,) flat panel position of each CSR weight
    refs: torch.Tensor         # (Gin, r) panel block (g*m + j) feeding each column group; padding -> G*m
    group_cols: torch.Tensor   # (Gin*bi,) original column of each column-group slot, or ``cols``
    nnz: int

    def to(self, device: torch.device) -> BlockPlan:
        fields: dict[str, Any] = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return BlockPlan(**fields)

    @property
    def groups(self) -> int:
        return int(self.row_perm.numel()) // self.bo


def _group_identical(indptr: np.ndarray, indices: np.ndarray, n: int, seed: int = 12345
                     ) -> tuple[np.ndarray, int]:
    """Group the n rows of a CSR pattern by identical column sets: (group id per row, group count).

    Rows are hashed (a sum of random 64-bit keys of their columns, plus their length), then every group
    is verified exactly against its first row, so a hash collision can only split a group.
    """
    rng = np.random.default_rng(seed)
    ncols = int(indices.max()) + 1 if indices.size else 1
    keys = rng.integers(0, 2**63 - 1, size=ncols, dtype=np.int64).astype(np.uint64)
    lengths = np.diff(indptr)
    sums = np.zeros(n, dtype=np.uint64)
    nonempty = lengths > 0
    if indices.size:
        with np.errstate(over="ignore"):
            red = np.add.reduceat(keys[indices], indptr[:-1][nonempty].astype(np.int64))
        sums[nonempty] = red
    sig = np.stack([sums, lengths.astype(np.uint64)], axis=1)
    _, first, gid = np.unique(sig, axis=0, return_index=True, return_inverse=True)
    gid = gid.reshape(-1)
    # exact verification: each row equals its group's first row
    rep = first[gid]
    same_len = lengths == lengths[rep]
    if not np.all(same_len):
        return np.arange(n), n
    row_of = st.row_of_nonzeros(indptr)
    offs = np.arange(indices.size) - indptr[row_of]
    rep_pos = indptr[rep[row_of]] + offs
    bad_rows = np.unique(row_of[indices != indices[rep_pos]])
    if bad_rows.size:  # a collision: give the offending rows their own groups
        gid = gid.copy()
        gid[bad_rows] = len(first) + np.arange(bad_rows.size)
        _, gid = np.unique(gid, return_inverse=True)
        return gid.reshape(-1), int(gid.max()) + 1
    return gid, len(first)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    a = np.sort(a)
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if a.size else a


def detect_blocks(indptr: np.ndarray, indices: np.ndarray, rows: int, cols: int,
                  min_block: int = 16) -> BlockPlan | None:
    """A BlockPlan when the pattern is uniformly block-structured with blocks of >= ``min_block`` weights.

    Requires every row group to have the same size ``bo`` and the same number ``m`` of column groups; column
    groups may differ in size (e.g. trimmed inputs) and are padded to the largest, ``bi``.
    """
    nnz = int(indptr[-1])
    if nnz == 0 or rows < 2:
        return None
    indices64 = indices.astype(np.int64)
    rgid, n_rg = _group_identical(indptr, indices64, rows)
    rsize = np.bincount(rgid, minlength=n_rg)
    bo = int(rsize[0])
    if n_rg == rows or np.any(rsize != bo):
        return None
    # column groups: group the transposed pattern
    perm = np.argsort(indices64, kind="stable")
    t_indices = st.row_of_nonzeros(indptr)[perm]
    t_indptr = np.zeros(cols + 1, dtype=np.int64)
    np.cumsum(np.bincount(indices64, minlength=cols), out=t_indptr[1:])
    cgid, n_cg = _group_identical(t_indptr, t_indices, cols)
    csize = np.bincount(cgid, minlength=n_cg)
    used = np.diff(t_indptr) > 0
    bi = int(csize[np.unique(cgid[used])].max())
    # block rows: the column groups of each row group's first row
    _, rep_rows = np.unique(rgid, return_index=True)  # first row of each group
    lens = np.diff(indptr)[rep_rows]
    # column groups of each group's first row: the distinct group ids along its columns
    row_of = st.row_of_nonzeros(indptr)
    is_rep = np.zeros(rows, dtype=bool)
    is_rep[rep_rows] = True
    sel = np.flatnonzero(is_rep[row_of])
    owner = rgid[row_of[sel]].astype(np.int64)
    pairs = _sorted_unique(owner * n_cg + cgid[indices64[sel]])
    per_group = np.bincount(pairs // n_cg, minlength=n_rg)
    m = int(per_group[0])
    if m == 0 or np.any(per_group != m):
        return None
    H = (pairs % n_cg).reshape(n_rg, m)                      # (G, m) column-group ids, sorted
    if np.any(csize[H].sum(1) != lens):
        return None
    if nnz / (n_rg * m) < min_block:  # average block size
        return None
    # members of each group, padded
    row_members = np.argsort(rgid, kind="stable").reshape(n_rg, bo)
    order = np.argsort(cgid, kind="stable")
    starts = np.zeros(n_cg + 1, dtype=np.int64)
    np.cumsum(csize, out=starts[1:])
    slot = np.full((n_cg, bi), cols, dtype=np.int64)
    pos_in_group = np.arange(cols) - starts[cgid[order]]
    keep = pos_in_group < bi
    slot[cgid[order][keep], pos_in_group[keep]] = order[keep]
    if np.any(csize > bi):  # an unused (empty) column group larger than bi never appears in H
        if np.any(csize[np.unique(H)] > bi):
            return None
    gather_cols = slot[H].reshape(-1)                         # (G*m*bi,)
    gather_cols = np.where(gather_cols < cols, gather_cols, 0)  # padding reads row 0 with a zero weight
    # CSR position of each panel weight
    G = n_rg
    prow = np.repeat(row_members.reshape(-1), m * bi)         # (G*bo*m*bi,)
    pcol = np.tile(slot[H].reshape(G, 1, m * bi), (1, bo, 1)).reshape(-1)
    value_index = np.full(prow.shape, nnz, dtype=np.int64)
    valid = pcol < cols
    key = prow[valid] * cols + pcol[valid]
    csr_key = st.row_of_nonzeros(indptr) * cols + indices64
    pos = np.searchsorted(csr_key, key)
    if pos.size != nnz or np.any(pos >= nnz) or np.any(csr_key[np.minimum(pos, nnz - 1)] != key):
        return None
    value_index[valid] = pos
    inverse = np.empty(nnz, dtype=np.int64)
    inverse[pos] = np.flatnonzero(valid)
    # which panel blocks (g*m + j) feed each column group, padded with the zero block G*m
    flat_h = H.reshape(-1)
    ref_count = np.bincount(flat_h, minlength=n_cg)
    r = int(ref_count.max())
    refs = np.full((n_cg, r), G * m, dtype=np.int64)
    order_h = np.argsort(flat_h, kind="stable")
    hstarts = np.zeros(n_cg + 1, dtype=np.int64)
    np.cumsum(ref_count, out=hstarts[1:])
    sorted_h = flat_h[order_h]
    refs[sorted_h, np.arange(flat_h.size) - hstarts[sorted_h]] = order_h

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

    return BlockPlan(rows, cols, bo, bi, m, t(row_members.reshape(-1)), t(gather_cols), t(value_index),
                     t(inverse), t(refs), t(slot.reshape(-1)), nnz)


class BlockLinear(torch.autograd.Function):
    """Feature-major block-sparse product: ``yt = W xt + b`` with W given on a BlockPlan."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None,
                plan: BlockPlan) -> torch.Tensor:
        # a row gather from a transposed view is far slower than a copy
        xt = kernels.feature_major(x.detach())
        batch = xt.shape[1]
        G, bo, m, bi = plan.groups, plan.bo, plan.m, plan.bi
        xg = xt.index_select(0, plan.gather_cols).view(G, m * bi, batch)
        v = values.detach()
        w = torch.cat([v, v.new_zeros(1)]).index_select(0, plan.value_index).view(G, bo, m * bi)
        yg = torch.bmm(w, xg).view(G * bo, batch)
        yt = torch.empty(plan.rows, batch, dtype=x.dtype, device=x.device)
        yt.index_copy_(0, plan.row_perm, yg)
        if bias is not None:
            yt.add_(bias.detach()[:, None])
        ctx.plan = plan
        ctx.has_bias = bias is not None
        ctx.leaf_input = kernels.wants_batch_major_grad(x)
        ctx.save_for_backward(xg, w)
        return yt.t()

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        xg, w = ctx.saved_tensors
        plan: BlockPlan = ctx.plan
        G, bo, m, bi = plan.groups, plan.bo, plan.m, plan.bi
        gyt = kernels.feature_major(gy)
        batch = gyt.shape[1]
        gyg = gyt.index_select(0, plan.row_perm).view(G, bo, batch)
        gx = gv = gb = None
        if ctx.needs_input_grad[0]:
            gxg = torch.bmm(w.transpose(1, 2), gyg).view(G * m, bi, batch)
            gxg = torch.cat([gxg, gxg.new_zeros(1, bi, batch)])
            per_group = gxg.index_select(0, plan.refs.view(-1)).view(plan.refs.shape[0], -1, bi, batch)
            summed = per_group.sum(1).view(-1, batch)                   # (Gin*bi, batch), fixed order
            gxt = torch.zeros(plan.cols + 1, batch, dtype=gy.dtype, device=gy.device)
            gxt.index_copy_(0, plan.group_cols, summed)  # padding slots all write zeros to row `cols`
            gx = kernels.input_grad(gxt[:plan.cols], ctx.leaf_input)
        if ctx.needs_input_grad[1]:
            gw = torch.bmm(gyg, xg.transpose(1, 2)).view(-1)
            gv = gw.index_select(0, plan.inverse)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gyt.sum(1)
        return gx, gv, gb, None
