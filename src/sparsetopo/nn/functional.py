"""Forward/backward of the ``sparse`` backend: autograd Functions over CSR structures.

The weight is ``values`` (nnz) on a fixed CSR pattern over (rows=outputs, cols=inputs). Forward is a
sparse-dense product, the input gradient uses the transposed pattern (built once per structure, values
permuted each step), and the weight gradient is computed only at the nonzeros (SDDMM). No dense
weight-sized tensor is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sparsetopo.nn import blocks, kernels
from sparsetopo.nn import structure as st


@dataclass
class Plan:
    """Index arrays derived once from a layer's structure (kept off the state dict)."""

    rows: int
    cols: int
    indptr: torch.Tensor      # int64 (rows+1)
    indices: torch.Tensor     # int64 (nnz)
    t_indptr: torch.Tensor    # int64 (cols+1): transposed pattern
    t_indices: torch.Tensor   # int64 (nnz): row of each nonzero of the transposed pattern
    perm: torch.Tensor        # int64 (nnz): transposed position -> CSR position
    np_indptr: np.ndarray
    np_indices: np.ndarray
    np_t_indptr: np.ndarray
    np_t_indices: np.ndarray
    np_perm: np.ndarray       # int32 where nnz allows
    device: torch.device
    block: blocks.BlockPlan | None = None


def build_plan(indptr: np.ndarray, indices: np.ndarray, rows: int, cols: int,
               device: torch.device) -> Plan:
    indptr = indptr.astype(np.int64)
    indices = indices.astype(st.INDEX_DTYPE)
    row_of = st.row_of_nonzeros(indptr).astype(st.INDEX_DTYPE)
    perm = np.argsort(indices, kind="stable").astype(np.int64)
    t_indices = row_of[perm]
    t_indptr = np.zeros(cols + 1, dtype=np.int64)
    np.cumsum(np.bincount(indices, minlength=cols), out=t_indptr[1:])

    def dev(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64)).to(device)

    # the numba kernels read the permutation once per backward: int32 halves that random-access traffic
    np_perm = perm.astype(np.int32) if perm.shape[0] < 2**31 else perm
    return Plan(rows, cols, dev(indptr), dev(indices), dev(t_indptr), dev(t_indices), dev(perm),
                indptr, indices, t_indptr, t_indices.astype(st.INDEX_DTYPE), np_perm, device)


# The block kernel is used when the mask's dense blocks are at least this tall and this large; below
# that, the CSR kernel is as fast (measured with benchmarks/bench_kernels.py, see docs/sparse-compute.md).
BLOCK_MIN_ROWS = 64
BLOCK_MIN_SIZE = 8192


def layer_plan(layer) -> Plan:
    plan = layer._plan
    dev = layer.weight_values.device
    if plan is None or plan.device != dev:
        ip = layer.weight_indptr.cpu().numpy()
        ix = layer.weight_indices.cpu().numpy()
        plan = build_plan(ip, ix, layer._rows, layer._cols, dev)
        plan.block = None
        if layer.block_kernel:
            bp = blocks.detect_blocks(ip, ix, layer._rows, layer._cols, min_block=BLOCK_MIN_SIZE)
            if bp is not None and bp.bo >= BLOCK_MIN_ROWS:
                plan.block = bp.to(dev)
        layer._plan = plan
    return plan


def _csr(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]):
    return torch.sparse_csr_tensor(indptr, indices, values, size=shape)


class CSRLinearTorch(torch.autograd.Function):
    """y = x W^T with W given by (values, plan), using torch's CSR kernels (any device)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, values: torch.Tensor, plan: Plan) -> torch.Tensor:
        ctx.plan = plan
        ctx.save_for_backward(x, values)
        if plan.indices.numel() == 0:
            return x.new_zeros(x.shape[0], plan.rows)
        w = _csr(plan.indptr, plan.indices, values, (plan.rows, plan.cols))
        return (w @ x.t()).t()

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        x, values = ctx.saved_tensors
        plan: Plan = ctx.plan
        gx = gv = None
        empty = plan.indices.numel() == 0
        if ctx.needs_input_grad[0]:
            if empty:
                gx = torch.zeros_like(x)
            else:
                wt = _csr(plan.t_indptr, plan.t_indices, values[plan.perm], (plan.cols, plan.rows))
                gx = (wt @ gy.t()).t()
        if ctx.needs_input_grad[1]:
            if empty:
                gv = torch.zeros_like(values)
            else:
                pattern = _csr(plan.indptr, plan.indices, torch.zeros_like(values), (plan.rows, plan.cols))
                gv = torch.sparse.sampled_addmm(pattern, gy.t().contiguous(), x.contiguous(),
                                                beta=0.0).values().clone()
        return gx, gv, None


class CSRLinearNumba(torch.autograd.Function):
    """y = x W^T + b on CPU with the numba kernels; activations handled feature-major.

    The output is returned as the transpose of a contiguous (out, batch) tensor, so the next sparse layer
    (after element-wise ops, which keep the layout) reads it without a copy.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None,
                plan: Plan) -> torch.Tensor:
        xt = kernels.feature_major(x.detach())
        v = values.detach()
        b = bias.detach().numpy() if bias is not None else None
        yt = kernels.spmm(plan.np_indptr, plan.np_indices, v.numpy(), xt.numpy(), bias=b)
        ctx.plan = plan
        ctx.has_bias = bias is not None
        ctx.leaf_input = kernels.wants_batch_major_grad(x)
        ctx.save_for_backward(xt, values)
        return torch.from_numpy(yt).t()

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        xt, values = ctx.saved_tensors
        plan: Plan = ctx.plan
        gyt = kernels.feature_major(gy)
        gyt_np = gyt.numpy()
        gx = gv = gb = None
        if ctx.needs_input_grad[0]:
            gxt = kernels.spmm(plan.np_t_indptr, plan.np_t_indices, values.detach().numpy(), gyt_np,
                               perm=plan.np_perm)
            gx = kernels.input_grad(gxt, ctx.leaf_input)
        want_gb = ctx.has_bias and ctx.needs_input_grad[2]
        if ctx.needs_input_grad[1]:
            rowsum = np.empty(plan.rows, dtype=gyt_np.dtype) if want_gb else None
            gv = torch.from_numpy(kernels.sddmm(plan.np_indptr, plan.np_indices, gyt_np, xt.numpy(),
                                                rowsum=rowsum))
            if want_gb:
                gb = torch.from_numpy(rowsum)
        elif want_gb:
            gb = gyt.sum(1)
        return gx, gv, gb, None


def numba_ok(x: torch.Tensor, values: torch.Tensor) -> bool:
    """Whether the numba kernels apply: CPU, float32/float64, matching dtypes."""
    return (x.device.type == "cpu" and values.device.type == "cpu" and x.dtype == values.dtype
            and x.dtype in (torch.float32, torch.float64) and not x.is_sparse)


def csr_linear(x2d: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None,
               plan: Plan) -> torch.Tensor:
    """``x2d @ W^T + bias`` for a (batch, cols) input; W on ``plan`` with ``values``."""
    if getattr(plan, "block", None) is not None and x2d.shape[0] > 0:
        return blocks.BlockLinear.apply(x2d, values, bias, plan.block)
    if numba_ok(x2d, values) and (bias is None or bias.dtype == values.dtype):
        return CSRLinearNumba.apply(x2d, values, bias, plan)
    y = CSRLinearTorch.apply(x2d, values, plan)
    return y + bias if bias is not None else y


def sparse_linear(layer, x: torch.Tensor) -> torch.Tensor:
    plan = layer_plan(layer)
    if x.dim() == 2:
        return csr_linear(x, layer.weight_values, layer.bias, plan)
    lead = x.shape[:-1]
    y = csr_linear(x.reshape(-1, x.shape[-1]), layer.weight_values, layer.bias, plan)
    return y.reshape(*lead, plan.rows)


def conv_out_size(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                  dilation: tuple[int, int]) -> tuple[int, int]:
    """Output height and width of a convolution over an ``h`` x ``w`` input (torch's rule)."""
    oh = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    return oh, ow


class Im2ColT(torch.autograd.Function):
    """Patches of ``x`` (n, c, h, w) as a feature-major ``(c*kh*kw, n*oh*ow)`` matrix, in one strided copy.

    The backward folds the patch gradients back into the input (``F.fold``).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
        n, c, h, w = x.shape
        kh, kw = kernel
        ph, pw = padding
        xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x.contiguous()
        oh, ow = conv_out_size(h, w, kernel, stride, padding, dilation)
        sn, sc, sh, sw = xp.stride()
        patches = xp.as_strided((c, kh, kw, n, oh, ow),
                                (sc, sh * dilation[0], sw * dilation[1], sn, sh * stride[0], sw * stride[1]))
        ctx.geom = (n, c, h, w, kh, kw, oh, ow, ph, pw, stride, dilation)
        return patches.reshape(c * kh * kw, n * oh * ow)

    @staticmethod
    def backward(ctx, gxt: torch.Tensor):
        n, c, h, w, kh, kw, oh, ow, ph, pw, stride, dilation = ctx.geom
        # one strided accumulation per kernel position, in a fixed order: 2-9x faster than F.fold on CPU
        cols = gxt.reshape(c, kh, kw, n, oh, ow)
        gx = gxt.new_zeros(n, c, h + 2 * ph, w + 2 * pw)
        rows_end = stride[0] * (oh - 1) + 1
        cols_end = stride[1] * (ow - 1) + 1
        for i in range(kh):
            r0 = i * dilation[0]
            for j in range(kw):
                c0 = j * dilation[1]
                gx[:, :, r0:r0 + rows_end:stride[0], c0:c0 + cols_end:stride[1]] += cols[:, i, j].transpose(0, 1)
        if ph or pw:
            gx = gx[:, :, ph:ph + h, pw:pw + w]
        return gx, None, None, None, None


# Without autograd, a convolution whose output exceeds this many elements runs in batch chunks, so the
# patch matrix and the product's (out_ch, batch*pixels) layout exist for one chunk at a time, not for the
# whole batch beside the output.
NO_GRAD_CHUNK_ELEMENTS = 1 << 23


def sparse_conv2d(layer, x: torch.Tensor) -> torch.Tensor:
    """Convolution as a sparse product over (out_ch, in_ch*kh*kw) on feature-major patches.

    Only the connected (channel pair, kernel position) weights are multiplied.
    """
    plan = layer_plan(layer)
    batched = x.dim() == 4
    if not batched:
        x = x.unsqueeze(0)
    n = x.shape[0]
    oh, ow = _out_size(layer, x)
    per_sample = plan.rows * oh * ow
    if not torch.is_grad_enabled() and n > 1 and n * per_sample > NO_GRAD_CHUNK_ELEMENTS:
        # each output element is computed the same way whatever the chunk, so the result is identical
        chunk = max(1, NO_GRAD_CHUNK_ELEMENTS // per_sample)
        out = x.new_empty(n, plan.rows, oh, ow)
        for start in range(0, n, chunk):
            out[start:start + chunk] = sparse_conv2d(layer, x[start:start + chunk])
        return out
    xt = Im2ColT.apply(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    y = csr_linear(xt.t(), layer.weight_values, layer.bias, plan)   # (n*L, out), a transposed view
    y = y.t().reshape(plan.rows, n, oh * ow).permute(1, 0, 2).reshape(n, plan.rows, oh, ow)
    return y if batched else y.squeeze(0)


class WindowPatches(torch.autograd.Function):
    """The patches of ``x`` (n, c, h, w) for a convolution followed by k x k max-pooling (stride k), as a
    feature-major ``(c*kh*kw, k*k*M)`` matrix in *window order*: column ``q*M + (i*pw + j)*n + s`` is the
    patch of output position ``(i*k + di, j*k + dj)`` of sample ``s``, with ``q = di*k + dj`` and
    ``M = ph*pw*n``. Pooling is then an element-wise maximum over the k*k segments, and the pooled output
    comes out as ``(channels, ph, pw, n)``: the feature-major input of a following sparse layer. Output
    positions outside every window (odd sizes) are left out. One strided copy; the backward folds the
    patch gradients back into the input gradient (``kernels.fold_windows``), each input element adding its
    terms in kernel-position order as ``Im2ColT``'s backward does."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int], dilation: tuple[int, int], k: int) -> torch.Tensor:
        n, c, h, w = x.shape
        kh, kw = kernel
        ph_, pw_ = padding
        xp = F.pad(x, (pw_, pw_, ph_, ph_)) if (ph_ or pw_) else x
        oh, ow = conv_out_size(h, w, kernel, stride, padding, dilation)
        ph, pw = oh // k, ow // k
        sn, sc, sh, sw = xp.stride()
        patches = xp.as_strided(
            (c, kh, kw, k, k, ph, pw, n),
            (sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1], sh * stride[0] * k,
             sw * stride[1] * k, sn), xp.storage_offset())
        ctx.geom = (n, c, h, w, kh, kw, ph, pw, ph_, pw_, stride, dilation, k)
        return patches.reshape(c * kh * kw, k * k * ph * pw * n)

    @staticmethod
    def backward(ctx, gxt: torch.Tensor):
        n, c, h, w, kh, kw, ph, pw, pad_h, pad_w, stride, dilation, k = ctx.geom
        gx = gxt.new_zeros(n, c, h + 2 * pad_h, w + 2 * pad_w)
        # CPU float32/64 only (``fused_pool_ok``): one numba pass, channels split over the kernel threads
        cols = gxt.detach().contiguous().numpy().reshape(c, kh, kw, k, k, ph, pw, n)
        kernels.fold_windows(cols, gx.numpy(), dilation, stride)
        if pad_h or pad_w:
            gx = gx[:, :, pad_h:pad_h + h, pad_w:pad_w + w]
        return gx, None, None, None, None, None


class CSRConvPool(torch.autograd.Function):
    """``max_pool2d`` (k x k windows, stride k) of a sparse convolution's output, optionally followed by a
    ReLU, from window-ordered patches (``WindowPatches``), without the full-resolution output: each output
    row is pooled as it is computed, and the backward expands the pooled gradient into the window-ordered
    layout the SDDMM and transposed-product kernels read. The values are those of ``sparse_conv2d``
    followed by ``torch.max_pool2d`` (and ``torch.relu``) bit for bit; the gradients equal theirs to float
    rounding (the weight gradient sums the columns in window order), deterministically."""

    @staticmethod
    def forward(ctx, xt: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None, plan: Plan,
                geom: tuple[int, int, int, int], relu: bool) -> torch.Tensor:
        n, ph, pw, k = geom
        xt_np = xt.detach().numpy()
        b = (bias.detach().numpy() if bias is not None
             else np.zeros(plan.rows, dtype=xt_np.dtype))
        y, am = kernels.spmm_pool(plan.np_indptr, plan.np_indices, values.detach().numpy(), xt_np, b, k * k,
                                  relu)
        ctx.plan, ctx.geom, ctx.has_bias = plan, geom, bias is not None
        ctx.save_for_backward(xt, values)
        ctx.am = am
        # (rows, ph, pw, n) seen as (n, rows, ph, pw): flattening it gives a following layer's feature-major input
        return torch.from_numpy(y).view(plan.rows, ph, pw, n).permute(3, 0, 1, 2)

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        xt, values = ctx.saved_tensors
        plan: Plan = ctx.plan
        _, _, _, k = ctx.geom
        # free when gy comes back from a sparse layer in the layout forward gave (a transposed view)
        g = gy.detach().permute(1, 2, 3, 0).contiguous().reshape(plan.rows, -1)
        gyt = kernels.unpool(g.numpy(), ctx.am, k * k)
        gx = gv = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.from_numpy(kernels.spmm(plan.np_t_indptr, plan.np_t_indices, values.detach().numpy(),
                                               gyt, perm=plan.np_perm))
        want_gb = ctx.has_bias and ctx.needs_input_grad[2]
        if ctx.needs_input_grad[1]:
            rowsum = np.empty(plan.rows, dtype=gyt.dtype) if want_gb else None
            gv = torch.from_numpy(kernels.sddmm(plan.np_indptr, plan.np_indices, gyt, xt.detach().numpy(),
                                                rowsum=rowsum))
            if want_gb:
                gb = torch.from_numpy(rowsum)
        elif want_gb:
            gb = torch.from_numpy(gyt.sum(1))
        return gx, gv, gb, None, None, None


def fused_pool_ok(layer, x: torch.Tensor, kernel: int) -> bool:
    """Whether ``sparse_conv2d_pool`` applies: the CSR kernels (not the block kernel), a batched CPU
    input they take, and an output at least one window tall and wide."""
    plan = layer_plan(layer)
    return (plan.block is None and x.dim() == 4 and numba_ok(x, layer.weight_values)
            and (layer.bias is None or layer.bias.dtype == layer.weight_values.dtype)
            and kernel >= 1 and min(_out_size(layer, x)) >= kernel)


def _out_size(layer, x: torch.Tensor) -> tuple[int, int]:
    h, w = x.shape[-2:]
    return conv_out_size(h, w, layer.kernel_size, layer.stride, layer.padding, layer.dilation)


def sparse_conv2d_pool(layer, x: torch.Tensor, kernel: int, relu: bool = False) -> torch.Tensor:
    """``torch.max_pool2d(sparse_conv2d(layer, x), kernel)``, then ``torch.relu`` if ``relu``, in one pass (see
    ``CSRConvPool``); the caller checks ``fused_pool_ok``. The result has the shape of the two-step one and
    the memory layout ``(channels, ph, pw, n)``. Without autograd, large batches run in chunks, as in
    ``sparse_conv2d``, with the same values."""
    plan = layer_plan(layer)
    n = x.shape[0]
    oh, ow = _out_size(layer, x)
    ph, pw = oh // kernel, ow // kernel
    per_sample = layer._cols * kernel * kernel * ph * pw   # the patch matrix is the largest array here
    if not torch.is_grad_enabled() and n > 1 and n * per_sample > NO_GRAD_CHUNK_ELEMENTS:
        chunk = max(1, NO_GRAD_CHUNK_ELEMENTS // per_sample)
        out = x.new_empty(plan.rows, ph, pw, n)
        for start in range(0, n, chunk):
            part = sparse_conv2d_pool(layer, x[start:start + chunk], kernel, relu)
            out[..., start:start + chunk] = part.permute(1, 2, 3, 0)
        return out.permute(3, 0, 1, 2)
    xt = WindowPatches.apply(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation, kernel)
    return CSRConvPool.apply(xt, layer.weight_values, layer.bias, plan, (n, ph, pw, kernel), relu)
