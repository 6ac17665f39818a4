"""Sparse ``nn.Module`` layers: ``SparseLinear`` and ``SparseConv2d``.

Both keep a fixed connection structure (the *mask*) and train only the connected weights. Two parameter
layouts ("backends") sit behind the same API:

* ``masked``: a dense weight times a dense bool mask (the reference; supports ``set_mask``).
* ``sparse``: only the ``nnz`` connected weights are stored (``weight_values``) with the structure as CSR
  index arrays (``weight_indptr``, ``weight_indices``); forward and backward run sparse kernels and no
  dense weight-sized tensor is ever made.

``auto`` picks one of them per layer. State dicts load across backends exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparsetopo.errors import ConfigError
from sparsetopo.nn import structure as st
from sparsetopo.nn.structure import MaskLike

BACKENDS = ("auto", "masked", "sparse")
INITS = ("sparse", "dense")
DEFAULT_INIT = "sparse"


def _check_choice(what: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{what}={value!r} is not one of {', '.join(allowed)}")
    return value


def _check_positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{what}={value!r} must be a positive integer")
    return int(value)


def _pair(what: str, value: Any, minimum: int) -> tuple[int, int]:
    vals = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if (len(vals) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in vals)
            or any(v < minimum for v in vals)):
        raise ConfigError(f"{what}={value!r} must be an integer >= {minimum} or a pair of them")
    return int(vals[0]), int(vals[1])


def init_values(indptr: np.ndarray, fan_in_dense: int, init: str,
                bias: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Initial connected weights (in CSR order) and bias.

    ``dense``: PyTorch's default ``nn.Linear``/``nn.Conv2d`` init, U(-b, b) with b = 1/sqrt(fan_in) where
    fan_in counts every input as if the layer were dense. ``sparse``: the same rule with each output's
    *actual* fan-in (its number of connections). Values are drawn only for the connections, in row-major
    order, so every backend gets the same numbers from the same seed.
    """
    rows = len(indptr) - 1
    nnz = int(indptr[-1])
    dense_bound = 1.0 / math.sqrt(fan_in_dense) if fan_in_dense > 0 else 0.0
    values = torch.empty(nnz).uniform_(-1.0, 1.0)
    b = torch.empty(rows).uniform_(-1.0, 1.0) if bias else None
    if init == "dense":
        values.mul_(dense_bound)
        if b is not None:
            b.mul_(dense_bound)
        return values, b
    row_nnz = torch.from_numpy(np.diff(indptr).astype(np.int64))
    row_bound = torch.where(row_nnz > 0, row_nnz.clamp(min=1).double().rsqrt(),
                            torch.tensor(dense_bound, dtype=torch.float64)).float()
    values.mul_(torch.repeat_interleave(row_bound, row_nnz))
    if b is not None:
        b.mul_(row_bound)
    return values, b


class _SparseLayer(nn.Module):
    """Shared machinery: structure, backends, init, state dicts, set_mask."""

    _rows: int
    _cols: int
    weight_shape: tuple[int, ...]
    # parameters and buffers (registered in _setup/_install; which ones exist depends on the backend)
    weight: nn.Parameter
    weight_values: nn.Parameter
    bias: nn.Parameter | None
    mask: torch.Tensor
    weight_indptr: torch.Tensor
    weight_indices: torch.Tensor
    weight_shape_: torch.Tensor

    def _setup(self, indptr: np.ndarray, indices: np.ndarray, bias: bool, init: str, backend: str,
               fan_in_dense: int) -> None:
        self.init = _check_choice("init", init, INITS)
        self.requested_backend = _check_choice("backend", backend, BACKENDS)
        self.backend = self._resolve_backend(indptr, self.requested_backend)
        values, b = init_values(indptr, fan_in_dense, self.init, bias)
        self.register_buffer("weight_shape_", torch.tensor(self.weight_shape, dtype=torch.int64))
        self._install(indptr, indices, values)
        self.register_parameter("bias", nn.Parameter(b) if b is not None else None)

    # ----------------------------------------------------------------------------- backends
    def _resolve_backend(self, indptr: np.ndarray, requested: str) -> str:
        if requested != "auto":
            return requested
        return auto_backend(self._rows, self._cols, int(indptr[-1]), conv=isinstance(self, SparseConv2d))

    def kernel_name(self) -> str:
        """The compute path in use: ``dense`` (masked), ``csr`` or ``block(BOxBI)`` (sparse)."""
        if self.backend == "masked":
            return "dense"
        from sparsetopo.nn import functional as sf
        plan = sf.layer_plan(self)
        if plan.block is not None:
            return f"block({plan.block.bo}x{plan.block.bi})"
        return "csr"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_plan"] = None  # derived index arrays are rebuilt on first use
        return state

    def _install(self, indptr: np.ndarray, indices: np.ndarray, values: torch.Tensor) -> None:
        """Create the parameters and buffers of ``self.backend`` for this structure and these values."""
        for name in ("weight", "weight_values"):
            if name in self._parameters:
                del self._parameters[name]
        for name in ("mask", "weight_indptr", "weight_indices"):
            if name in self._buffers:
                del self._buffers[name]
        if self.backend == "masked":
            rows = st.row_of_nonzeros(indptr)
            cols = torch.from_numpy(indices.astype(np.int64))
            r = torch.from_numpy(rows)
            weight = torch.zeros(self._rows, self._cols, dtype=values.dtype, device=values.device)
            weight[r, cols] = values
            mask = torch.zeros(self._rows, self._cols, dtype=torch.bool, device=values.device)
            mask[r, cols] = True
            self.weight = nn.Parameter(weight.reshape(self.weight_shape))
            self.register_buffer("mask", mask.reshape(self.weight_shape))
        else:
            self.weight_values = nn.Parameter(values.clone())
            self.register_buffer("weight_indptr", torch.from_numpy(indptr.astype(np.int64)).to(values.device))
            self.register_buffer("weight_indices",
                                 torch.from_numpy(indices.astype(st.INDEX_DTYPE)).to(values.device))
        self._plan = None
        self.block_kernel = True

    # ----------------------------------------------------------------------------- structure
    def structure(self) -> tuple[np.ndarray, np.ndarray]:
        """The connection pattern as CSR (indptr int64, indices int32) over the flattened weight."""
        if self.backend == "masked":
            return st._dense_to_csr(self.mask.reshape(self._rows, self._cols).cpu().numpy())
        return (self.weight_indptr.cpu().numpy().astype(np.int64),
                self.weight_indices.cpu().numpy().astype(st.INDEX_DTYPE))

    @property
    def nnz(self) -> int:
        """Number of connections (stored weights)."""
        if self.backend == "masked":
            return int(self.mask.sum())
        return int(self.weight_indices.numel())

    @property
    def density(self) -> float:
        """nnz / number of weights of the dense-equivalent layer."""
        total = self._rows * self._cols
        return self.nnz / total if total else 0.0

    def mask_dense(self) -> torch.Tensor:
        """The mask as a dense bool tensor in the weight layout (allocates a weight-sized tensor)."""
        if self.backend == "masked":
            return self.mask.clone()
        indptr, indices = self.structure()
        dense = st.structure_to_dense(indptr, indices, self._cols).reshape(self.weight_shape)
        return torch.from_numpy(dense).to(self.weight_indices.device)

    def dense_weight(self) -> torch.Tensor:
        """The effective dense weight (zeros at pruned connections), detached, in the weight layout."""
        with torch.no_grad():
            if self.backend == "masked":
                return (self.weight * self.mask).detach().clone()
            v = self.weight_values.detach()
            dense = torch.zeros(self._rows * self._cols, dtype=v.dtype, device=v.device)
            rows = torch.from_numpy(st.row_of_nonzeros(self.weight_indptr.cpu().numpy())).to(v.device)
            dense[rows * self._cols + self.weight_indices.long()] = v
            return dense.reshape(self.weight_shape)

    def weight_values_csr(self) -> torch.Tensor:
        """The connected weights in CSR (row-major) order, detached: the same under every backend."""
        with torch.no_grad():
            if self.backend == "masked":
                return self.weight.detach().reshape(self._rows, self._cols)[
                    self.mask.reshape(self._rows, self._cols)].clone()
            return self.weight_values.detach().clone()

    # ----------------------------------------------------------------------------- effective weight
    def _masked_weight(self) -> torch.Tensor:
        # Multiplying by the mask makes the gradient exactly zero at pruned connections, so no optimiser
        # state (momentum, Adam moments) ever builds up there and weights that are zero stay zero.
        return self.weight * self.mask

    # ----------------------------------------------------------------------------- set_mask
    def set_mask(self, mask: MaskLike, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Replace the connection structure (e.g. gradual pruning or regrowth).

        Weights at removed connections are zeroed, and so are the optimiser's per-weight state entries
        (momentum_buffer, exp_avg, exp_avg_sq, ...) at those positions when ``optimizer`` is given.
        Newly added connections start at zero. Under the ``sparse`` backend the weight parameter is
        replaced by a new one of the new nnz; pass the optimiser so that it follows (its state is remapped).
        """
        indptr, indices = self._structure_from_mask(mask)
        if self.backend != "masked":
            self._set_mask_sparse(indptr, indices, optimizer)
            return
        rows = torch.from_numpy(st.row_of_nonzeros(indptr)).to(self.mask.device)
        cols = torch.from_numpy(indices.astype(np.int64)).to(self.mask.device)
        new = torch.zeros(self._rows, self._cols, dtype=torch.bool, device=self.mask.device)
        new[rows, cols] = True
        new = new.reshape(self.weight_shape)
        with torch.no_grad():
            self.mask.copy_(new)
            self.weight.mul_(self.mask)
        if optimizer is not None:
            for state_key in (self.weight,):
                state = optimizer.state.get(state_key)
                if not state:
                    continue
                for value in state.values():
                    if torch.is_tensor(value) and value.shape == self.weight.shape:
                        with torch.no_grad():
                            value.masked_fill_(~self.mask, 0)
        self._plan = None

    def _set_mask_sparse(self, indptr: np.ndarray, indices: np.ndarray,
                         optimizer: torch.optim.Optimizer | None) -> None:
        """``set_mask`` for the sparse layout: a new nnz-sized parameter replaces the old one.

        Kept connections keep their values (and optimiser state); new ones start at zero. The optimiser,
        when given, is pointed at the new parameter with its per-weight state remapped; an optimiser that
        is not passed keeps updating the old, detached parameter.
        """
        old_ip, old_ix = self.structure()
        old_key = st.row_of_nonzeros(old_ip) * self._cols + old_ix.astype(np.int64)
        new_key = st.row_of_nonzeros(indptr) * self._cols + indices.astype(np.int64)
        pos = np.searchsorted(old_key, new_key)
        pos_c = np.minimum(pos, max(len(old_key) - 1, 0))
        found = (pos < len(old_key)) & (old_key[pos_c] == new_key) if len(old_key) else np.zeros(
            len(new_key), dtype=bool)
        old_param = self.weight_values
        dev = old_param.device
        src = torch.from_numpy(pos_c[found]).to(dev)
        dst = torch.from_numpy(np.flatnonzero(found)).to(dev)

        def remap(t: torch.Tensor) -> torch.Tensor:
            out = t.new_zeros(len(new_key))
            out[dst] = t.detach()[src]
            return out

        new_param = nn.Parameter(remap(old_param), requires_grad=old_param.requires_grad)
        if optimizer is not None:
            for group in optimizer.param_groups:
                group["params"] = [new_param if p is old_param else p for p in group["params"]]
            state = optimizer.state.pop(old_param, None)
            if state is not None:
                optimizer.state[new_param] = {
                    k: (remap(v) if torch.is_tensor(v) and v.shape == old_param.shape else v)
                    for k, v in state.items()}
        del self._parameters["weight_values"]
        self.weight_values = new_param
        self.weight_indptr = torch.from_numpy(indptr.astype(np.int64)).to(dev)
        self.weight_indices = torch.from_numpy(indices.astype(st.INDEX_DTYPE)).to(dev)
        self._plan = None

    def _structure_from_mask(self, mask: MaskLike) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    # ----------------------------------------------------------------------------- state dicts
    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        sd = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
        where = prefix[:-1] if prefix else type(self).__name__
        shape_key = prefix + "weight_shape_"
        if shape_key in sd:
            saved = tuple(int(s) for s in sd[shape_key].tolist())
            if saved != tuple(self.weight_shape):
                raise ConfigError(
                    f"cannot load '{where}': the saved weight shape {st._shape_str(saved)} differs from "
                    f"this layer's {st._shape_str(self.weight_shape)}"
                )
        saved_structure, saved_values = self._saved_structure(sd, prefix)
        if saved_structure is not None:
            own = self.structure()
            if not st.same_structure(own, saved_structure):
                raise ConfigError(
                    f"cannot load '{where}': its mask differs from this layer's "
                    f"(saved vs this layer: {st.describe_difference(saved_structure, own, self._cols)}); "
                    f"build the layer with the saved mask"
                )
        # Translate the saved weights into this backend's layout.
        if saved_values is not None:
            for k in ("weight", "mask", "weight_values", "weight_indptr", "weight_indices"):
                sd.pop(prefix + k, None)
            if self.backend == "masked":
                own_ip, own_ix = saved_structure if saved_structure is not None else self.structure()
                dense = torch.zeros(self._rows, self._cols, dtype=saved_values.dtype)
                rows = torch.from_numpy(st.row_of_nonzeros(own_ip))
                dense[rows, torch.from_numpy(own_ix.astype(np.int64))] = saved_values.cpu()
                sd[prefix + "weight"] = dense.reshape(self.weight_shape)
                sd[prefix + "mask"] = self.mask
            else:
                sd[prefix + "weight_values"] = saved_values
                sd[prefix + "weight_indptr"] = self.weight_indptr
                sd[prefix + "weight_indices"] = self.weight_indices
        if shape_key not in sd:
            sd[shape_key] = self.weight_shape_
        super()._load_from_state_dict(sd, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if self.backend == "masked":
            with torch.no_grad():
                self.weight.mul_(self.mask)
        self._plan = None

    def _saved_structure(self, sd: dict, prefix: str
                         ) -> tuple[tuple[np.ndarray, np.ndarray] | None, torch.Tensor | None]:
        """(structure, values in CSR order) of a saved layer in either backend's layout, when present."""
        if prefix + "weight_indptr" in sd and prefix + "weight_indices" in sd:
            indptr = sd[prefix + "weight_indptr"].cpu().numpy().astype(np.int64)
            indices = sd[prefix + "weight_indices"].cpu().numpy().astype(st.INDEX_DTYPE)
            values = sd.get(prefix + "weight_values")
            return (indptr, indices), (values.detach() if values is not None else None)
        if prefix + "mask" in sd:
            mask = sd[prefix + "mask"]
            if tuple(mask.shape) != tuple(self.weight_shape):
                raise ConfigError(
                    f"cannot load '{prefix[:-1]}': the saved mask shape {st._shape_str(mask.shape)} differs "
                    f"from this layer's weight shape {st._shape_str(self.weight_shape)}"
                )
            m2 = mask.reshape(self._rows, self._cols).cpu()
            structure = st._dense_to_csr(m2.numpy())
            weight = sd.get(prefix + "weight")
            values = None
            if weight is not None:
                values = weight.detach().cpu().reshape(self._rows, self._cols)[m2.bool()]
            return structure, values
        weight = sd.get(prefix + "weight")
        if weight is not None:  # a plain dense layer's state dict: keep this layer's own mask
            if tuple(weight.shape) != tuple(self.weight_shape):
                return None, None  # let torch report the shape mismatch
            ip, ix = self.structure()
            w2 = weight.detach().cpu().reshape(self._rows, self._cols)
            values = w2[torch.from_numpy(st.row_of_nonzeros(ip)), torch.from_numpy(ix.astype(np.int64))]
            return None, values
        return None, None

    def extra_repr(self) -> str:
        return (f"nnz={self.nnz}, density={self.density:.4g}, backend={self.backend}, init={self.init}, "
                f"bias={self.bias is not None}")


class SparseLinear(_SparseLayer):
    """A linear layer ``y = x W^T + b`` whose weight ``W`` (out x in) is nonzero only where ``mask`` is."""

    def __init__(self, in_features: int, out_features: int, mask: MaskLike, bias: bool = True,
                 init: str = DEFAULT_INIT, backend: str = "auto") -> None:
        super().__init__()
        self.in_features = _check_positive_int("in_features", in_features)
        self.out_features = _check_positive_int("out_features", out_features)
        _check_choice("init", init, INITS)
        _check_choice("backend", backend, BACKENDS)
        self._rows, self._cols = self.out_features, self.in_features
        self.weight_shape = (self.out_features, self.in_features)
        indptr, indices = self._structure_from_mask(mask)
        self._setup(indptr, indices, bias, init, backend, self.in_features)

    def _structure_from_mask(self, mask: MaskLike) -> tuple[np.ndarray, np.ndarray]:
        return st.linear_structure(mask, self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "masked":
            return F.linear(x, self._masked_weight(), self.bias)
        from sparsetopo.nn import functional as sf
        return sf.sparse_linear(self, x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " + super().extra_repr()


class SparseConv2d(_SparseLayer):
    """A 2-D convolution whose weight (out_ch x in_ch x kh x kw) is nonzero only where ``mask`` is.

    ``mask`` is a channel mask ``(out_channels, in_channels)`` (a connected channel pair keeps its whole
    kernel) or a full weight-shaped mask ``(out_channels, in_channels, kh, kw)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 mask: MaskLike, stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 bias: bool = True, init: str = DEFAULT_INIT, backend: str = "auto",
                 dilation: int | tuple[int, int] = 1) -> None:
        super().__init__()
        self.in_channels = _check_positive_int("in_channels", in_channels)
        self.out_channels = _check_positive_int("out_channels", out_channels)
        self.kernel_size = _pair("kernel_size", kernel_size, 1)
        self.stride = _pair("stride", stride, 1)
        self.padding = _pair("padding", padding, 0)
        self.dilation = _pair("dilation", dilation, 1)
        _check_choice("init", init, INITS)
        _check_choice("backend", backend, BACKENDS)
        kk = self.kernel_size[0] * self.kernel_size[1]
        self._rows, self._cols = self.out_channels, self.in_channels * kk
        self.weight_shape = (self.out_channels, self.in_channels, *self.kernel_size)
        indptr, indices = self._structure_from_mask(mask)
        self._setup(indptr, indices, bias, init, backend, self._cols)

    def _structure_from_mask(self, mask: MaskLike) -> tuple[np.ndarray, np.ndarray]:
        return st.conv_structure(mask, self.out_channels, self.in_channels, self.kernel_size)

    def channel_mask(self) -> torch.Tensor | None:
        """The ``(out_channels, in_channels)`` bool channel mask, or None if some pair is partly kept."""
        indptr, indices = self.structure()
        kk = self.kernel_size[0] * self.kernel_size[1]
        pattern = st.channel_pattern(indptr, indices, kk)
        if pattern is None:
            return None
        return torch.from_numpy(st.structure_to_dense(pattern[0], pattern[1], self.in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "masked":
            return F.conv2d(x, self._masked_weight(), self.bias, self.stride, self.padding, self.dilation)
        from sparsetopo.nn import functional as sf
        return sf.sparse_conv2d(self, x)

    def forward_max_pool(self, x: torch.Tensor, kernel_size: int, relu: bool = False) -> torch.Tensor:
        """``torch.max_pool2d(self(x), kernel_size)`` (square windows, stride = kernel), then ``torch.relu`` if
        ``relu``, values and gradients.

        On the ``sparse`` backend the product is pooled as it is computed (numba, CPU), so the
        full-resolution output, the largest activation of a wide convolution, is never stored; elsewhere
        it is the plain two-step computation.
        """
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise ConfigError(f"kernel_size must be a positive int, got {kernel_size!r}")
        if self.backend != "masked":
            from sparsetopo.nn import functional as sf
            if sf.fused_pool_ok(self, x, kernel_size):
                return sf.sparse_conv2d_pool(self, x, kernel_size, relu)
        return _pool_relu(self(x), kernel_size, relu)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, " + super().extra_repr())


# ``auto`` chooses the sparse backend for a linear layer at or below this density and for layers big enough
# that the fixed per-call cost of the sparse path does not matter (see docs/sparse-compute.md).
AUTO_MAX_DENSITY = 0.2
AUTO_MIN_WEIGHTS = 65536

# Convolutions: a cost model per output pixel of one sample, in nanoseconds, fitted to the convolution
# measurements in docs/sparse-compute.md (forward + backward, 2 cores). The sparse path pays for its patch
# matrix (the strided copy and the fold of its gradient), for its three sparse products and for moving
# the output; the dense convolution pays for three dense products. The sparse path is picked only when it
# is predicted to be clearly faster.
CONV_PATCH_NS = 6.64         # per patch-matrix element (in_ch * kh * kw of them)
CONV_SPARSE_MAC_NS = 0.0227  # per multiply-add of a sparse product (three per connection)
CONV_OUTPUT_NS = 4.63        # per output channel
CONV_DENSE_MAC_NS = 0.0244   # per multiply-add of a dense product (three per dense-equivalent weight)
CONV_MARGIN = 2.0  # 3x3 ResNet convolutions predicted 1.6-1.7x cheaper sparse measured level (docs)


def conv_costs(out_channels: int, patch: int, nnz: int) -> tuple[float, float]:
    """Predicted (masked, sparse) nanoseconds per output pixel of one sample for a convolution with
    ``patch = in_channels * kh * kw`` inputs per output and ``nnz`` connections."""
    masked = 3 * CONV_DENSE_MAC_NS * out_channels * patch
    sparse = CONV_PATCH_NS * patch + 3 * CONV_SPARSE_MAC_NS * nnz + CONV_OUTPUT_NS * out_channels
    return masked, sparse


def auto_backend(rows: int, cols: int, nnz: int, conv: bool = False) -> str:
    """The backend ``auto`` picks for a layer of this dense size (``rows`` outputs, ``cols`` inputs: for a
    convolution, output channels and in_channels * kh * kw) and nnz.

    The choice depends on the structure's shape and size only, never on timings taken at run time, so a
    run reproduces bit for bit.
    """
    total = rows * cols
    if total < AUTO_MIN_WEIGHTS:
        return "masked"
    if conv:
        masked, sparse = conv_costs(rows, cols, nnz)
        return "sparse" if CONV_MARGIN * sparse <= masked else "masked"
    return "sparse" if nnz <= AUTO_MAX_DENSITY * total else "masked"


def conv_max_pool2d(conv: nn.Module, x: torch.Tensor, kernel_size: int, relu: bool = False) -> torch.Tensor:
    """``torch.max_pool2d(conv(x), kernel_size)``, then ``torch.relu`` if ``relu``, for any convolution
    module; a ``SparseConv2d`` computes it in one pass on the sparse backend
    (``SparseConv2d.forward_max_pool``)."""
    if isinstance(conv, SparseConv2d):
        return conv.forward_max_pool(x, kernel_size, relu)
    return _pool_relu(conv(x), kernel_size, relu)


def _pool_relu(y: torch.Tensor, kernel_size: int, relu: bool) -> torch.Tensor:
    """The plain two-step computation: ``torch.max_pool2d``, then ``torch.relu`` if ``relu``."""
    y = torch.max_pool2d(y, kernel_size)
    return torch.relu(y) if relu else y


def sparse_layers(model: nn.Module) -> list[tuple[str, _SparseLayer]]:
    """The model's ``SparseLinear``/``SparseConv2d`` modules as (qualified name, module), in order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _SparseLayer)]


def count_weights(model: nn.Module) -> tuple[int, int]:
    """(weights_total, weights_nonzero) of the dense-equivalent model, biases excluded.

    Sparse layers count their dense-equivalent size and their connections; a plain ``nn.Linear`` or
    convolution counts all its weights in both.
    """
    total = nonzero = 0
    for m in model.modules():
        if isinstance(m, _SparseLayer):
            total += m._rows * m._cols
            nonzero += m.nnz
        elif isinstance(m, (nn.Linear, nn.modules.conv._ConvNd, nn.Bilinear)):
            total += m.weight.numel()
            nonzero += m.weight.numel()
    return total, nonzero
