"""Sparse layers with a fixed connection structure, and the kernels that train them sparsely.

``SparseLinear`` and ``SparseConv2d`` are drop-in modules whose weights exist only at the connections
of a mask; ``backend="masked"`` computes with a dense weight times the mask, ``backend="sparse"`` stores and
computes only the connections, and ``backend="auto"`` picks per layer. This package does not import the
model or training packages.
"""

from sparsetopo.nn.layers import (
    BACKENDS,
    DEFAULT_INIT,
    INITS,
    SparseConv2d,
    SparseLinear,
    conv_max_pool2d,
    count_weights,
    sparse_layers,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_INIT",
    "INITS",
    "SparseConv2d",
    "SparseLinear",
    "conv_max_pool2d",
    "count_weights",
    "sparse_layers",
]
