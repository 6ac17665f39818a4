"""Challenge-style networks from RadiX-Nets, and challenge inputs from MNIST.

Networks: the first ``m`` layers are exactly the RadiX-Net with systems ``(radix,) * m`` and Kronecker width
``block`` everywhere (``N = block * radix**m``; the official networks use radix 2 and block 16, so 32
nonzeros per row and column); each later layer ``l`` is a copy of layer ``l mod m`` with its rows and its
columns independently permuted (seeded), so the place values cycle. This is how the official 1024-neuron
network is built: its layers 1-6 are exactly that RadiX-Net and layer ``l`` has ``2**((l-1) mod 6)``
connected components, like the RadiX layer it copies.

Inputs: MNIST training images resized to ``sqrt(N) x sqrt(N)`` by FFT resampling (``scipy.signal.resample``
along both axes: output pixel ``x`` samples input position ``x * 28 / sqrt(N)``), binarised at a global
threshold, flattened column-major (column ``sqrt(N) * x + y`` for image column ``x`` and row ``y``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from sparsetopo.challenge.formats import PathLike, write_inputs, write_weights
from sparsetopo.challenge.network import (
    YMAX,
    ChallengeNetwork,
    default_bias,
    index_dtype,
    transpose_tables,
)
from sparsetopo.errors import ConfigError

WEIGHT = 0.0625
# Threshold (intensity / 255) on the FFT-resampled images that gives the official input file's count of
# nonzeros (6,374,505) over the 60,000 images at 1024 neurons.
MNIST_THRESHOLD = 0.72404705


def base_systems(neurons: int, radix: int = 2, block: int = 16) -> int:
    """The number ``m`` of base RadiX layers: ``neurons == block * radix**m``; a ConfigError otherwise."""
    for name, v in (("neurons", neurons), ("radix", radix), ("block", block)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    if radix < 2:
        raise ConfigError(f"radix must be >= 2, got {radix}")
    if neurons % block:
        raise ConfigError(f"neurons ({neurons}) must be a multiple of the block width {block}")
    n_prime = neurons // block
    m = round(math.log(n_prime, radix)) if n_prime > 1 else 0
    if m < 1 or radix ** m != n_prime:
        raise ConfigError(
            f"neurons ({neurons}) must be block ({block}) times a power of the radix ({radix}) with exponent "
            f">= 1, e.g. {block * radix ** 6}"
        )
    return m


def _base_tables(neurons: int, radix: int, block: int) -> list[np.ndarray]:
    from sparsetopo.topology import radix_net

    m = base_systems(neurons, radix, block)
    topo = radix_net([(radix,) * m], kron=(block,) * (m + 1))
    k = radix * block
    return [np.asarray(layer.indices, dtype=np.int64).reshape(neurons, k) for layer in topo.layers]


def layer_tables(
    neurons: int, layers: int, seed: int = 0, *, radix: int = 2, block: int = 16,
) -> Iterator[np.ndarray]:
    """Row tables ``(N, radix*block)`` (sorted output indices of each input neuron), layer by layer."""
    if not isinstance(layers, (int, np.integer)) or layers < 1:
        raise ConfigError(f"layers must be a positive integer, got {layers!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    base = _base_tables(neurons, radix, block)
    rng = np.random.default_rng(seed)
    for l in range(layers):
        table = base[l % len(base)]
        if l >= len(base):
            rows = rng.permutation(neurons)        # new row i is old row rows[i]
            cols = rng.permutation(neurons)        # new column j is old column cols[j]
            inverse = np.empty(neurons, dtype=np.int64)
            inverse[cols] = np.arange(neurons)
            table = np.sort(inverse[table[rows]], axis=1)
        yield table


def generate_layers(
    neurons: int, layers: int, seed: int = 0, *, radix: int = 2, block: int = 16,
) -> list[sp.csr_array]:
    """The layers as boolean CSR matrices (input x output)."""
    out = []
    for table in layer_tables(neurons, layers, seed, radix=radix, block=block):
        k = table.shape[1]
        indptr = np.arange(0, neurons * k + 1, k, dtype=np.int64)
        out.append(sp.csr_array((np.ones(table.size, dtype=bool), table.ravel(), indptr), shape=(neurons, neurons)))
    return out


def generate_network(
    neurons: int, layers: int, seed: int = 0, *, bias: float | None = None, radix: int = 2, block: int = 16,
) -> ChallengeNetwork:
    """The generated network in the engine's layout, every weight 1/16, the official bias by default."""
    b = default_bias(neurons) if bias is None else float(bias)
    itype = index_dtype(neurons, False)
    k = radix * block
    idx = np.empty((layers, neurons, k), dtype=itype)
    for l, table in enumerate(layer_tables(neurons, layers, seed, radix=radix, block=block)):
        idx[l] = table
    tidx, _ = transpose_tables(idx, None, neurons)
    nnz = np.full(layers, neurons * k, dtype=np.int64)
    meta = {"kind": "generated", "seed": seed, "radix": radix, "block": block}
    return ChallengeNetwork(neurons, b, idx, tidx, nnz, np.full(layers, WEIGHT), None, None, YMAX, meta)


def write_network(
    folder: PathLike, neurons: int, layers: int, seed: int = 0, *, radix: int = 2, block: int = 16,
    compress: bool = False, progress: Any = None,
) -> list[Path]:
    """Write ``folder/neuronN/nN-l1.tsv .. nN-lL.tsv`` (``.tsv.gz`` with ``compress``), official format."""
    out_dir = Path(folder) / f"neuron{neurons}"
    suffix = ".tsv.gz" if compress else ".tsv"
    paths = []
    for l, table in enumerate(layer_tables(neurons, layers, seed, radix=radix, block=block)):
        k = table.shape[1]
        indptr = np.arange(0, neurons * k + 1, k, dtype=np.int64)
        mat = sp.csr_array((np.full(table.size, WEIGHT), table.ravel(), indptr), shape=(neurons, neurons))
        path = out_dir / f"n{neurons}-l{l + 1}{suffix}"
        write_weights(path, mat)
        paths.append(path)
        if progress:
            progress(l + 1, layers)
    return paths


def resample_matrix(size_in: int, size_out: int) -> np.ndarray:
    """The (size_out, size_in) matrix of FFT resampling (``scipy.signal.resample``) along one axis."""
    from scipy.signal import resample

    return resample(np.eye(size_in), size_out, axis=0)


def images_to_inputs(
    images: np.ndarray, neurons: int, *, threshold: float = MNIST_THRESHOLD, chunk: int = 4096,
) -> sp.csr_array:
    """Binary challenge inputs (images x neurons, float64 ones) from (n, H, W) or (n, 1, H, W) uint8 images."""
    imgs = np.asarray(images)
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        imgs = imgs[:, 0]
    if imgs.ndim != 3:
        raise ConfigError(f"images must have shape (n, H, W) or (n, 1, H, W), got {np.shape(images)}")
    side = math.isqrt(neurons)
    if side * side != neurons:
        raise ConfigError(f"neurons ({neurons}) must be a perfect square to hold side x side images")
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold must be in (0, 1) (a fraction of full intensity 255), got {threshold}")
    n, h, w = imgs.shape
    rows_m = resample_matrix(h, side)        # (side, h)
    cols_m = resample_matrix(w, side)        # (side, w)
    parts = []
    for start in range(0, n, chunk):
        block = imgs[start:start + chunk].astype(np.float64) / 255.0
        c = block.shape[0]
        # resample the columns (along each row), then the rows; the result is indexed [image, x, y]
        step = (block.reshape(c * h, w) @ cols_m.T).reshape(c, h, side)
        out = (step.transpose(0, 2, 1).reshape(c * side, h) @ rows_m.T).reshape(c, side * side)
        parts.append(sp.csr_array(out > threshold))
    mat = sp.csr_array(sp.vstack(parts, format="csr")).astype(np.float64)
    mat.sort_indices()
    return mat


def mnist_inputs(
    neurons: int = 1024, data_dir: PathLike | None = None, *, count: int | None = None,
    threshold: float = MNIST_THRESHOLD,
) -> sp.csr_array:
    """Challenge inputs regenerated from the first ``count`` (default all 60,000) MNIST training images."""
    from sparsetopo.data import load_raw

    raw = load_raw("mnist", data_dir)
    images = raw.train_images
    if count is not None:
        if not 1 <= count <= len(images):
            raise ConfigError(f"count must be in 1..{len(images)}, got {count}")
        images = images[:count]
    return images_to_inputs(images, neurons, threshold=threshold)


def write_mnist_inputs(path: PathLike, neurons: int = 1024, data_dir: PathLike | None = None, *,
                       count: int | None = None, threshold: float = MNIST_THRESHOLD) -> sp.csr_array:
    """Regenerate the inputs from MNIST and write them as ``sparse-images-N.tsv`` (``.gz`` compresses)."""
    mat = mnist_inputs(neurons, data_dir, count=count, threshold=threshold)
    write_inputs(path, mat)
    return mat
