"""Strict parsers for the IDX (MNIST, Fashion-MNIST) and CIFAR-10 file formats.

Every parser takes the file's decompressed bytes and the name to use in error messages, and raises
:class:`~sparsetopo.errors.DataError` with a one-line message naming the file and the problem.
"""

from __future__ import annotations

import pickle
import struct

import numpy as np

from sparsetopo.errors import DataError

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
_IDX_UBYTE = 0x08
CIFAR_RECORD = 1 + 3 * 32 * 32


def parse_idx(data: bytes, name: str, *, ndim: int, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    """Parse an unsigned-byte IDX file with ``ndim`` dimensions (1 for labels, 3 for images)."""
    if len(data) < 4:
        raise DataError(f"{name}: truncated: {len(data)} bytes, too short for an IDX header")
    zero, dtype_code, dims = struct.unpack(">HBB", data[:4])
    expected_magic = (_IDX_UBYTE << 8) | ndim
    magic = (dtype_code << 8) | dims
    if zero != 0 or magic != expected_magic:
        raise DataError(
            f"{name}: wrong magic number 0x{int.from_bytes(data[:4], 'big'):08x}, "
            f"expected 0x{expected_magic:08x} (unsigned-byte IDX with {ndim} dimension(s))"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated: {len(data)} bytes, header needs {header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if shape_tail and tuple(shape[1:]) != shape_tail:
        raise DataError(f"{name}: wrong sizes {shape}, expected (N, {', '.join(map(str, shape_tail))})")
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) < expected:
        raise DataError(f"{name}: truncated: {len(data)} bytes, header promises {expected} for shape {shape}")
    if len(data) > expected:
        raise DataError(f"{name}: {len(data) - expected} unexpected trailing bytes after shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def parse_idx_images(data: bytes, name: str, height: int = 28, width: int = 28) -> np.ndarray:
    return parse_idx(data, name, ndim=3, shape_tail=(height, width))


def parse_idx_labels(data: bytes, name: str, num_classes: int = 10) -> np.ndarray:
    labels = parse_idx(data, name, ndim=1)
    if labels.size and int(labels.max()) >= num_classes:
        raise DataError(f"{name}: corrupt: label {int(labels.max())} out of range 0..{num_classes - 1}")
    return labels


def parse_cifar_binary(data: bytes, name: str, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Parse one official CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes (CHW)."""
    if len(data) == 0 or len(data) % CIFAR_RECORD:
        raise DataError(
            f"{name}: wrong size {len(data)} bytes: not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records"
            + (" (truncated?)" if len(data) % CIFAR_RECORD else "")
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].copy()
    if int(labels.max()) >= num_classes:
        raise DataError(f"{name}: corrupt: label {int(labels.max())} out of range 0..{num_classes - 1}")
    images = records[:, 1:].reshape(-1, 3, 32, 32).copy()
    return images, labels


def parse_cifar_pickle(data: bytes, name: str, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Parse one official CIFAR-10 *python* batch (a pickled dict with b'data' and b'labels')."""
    try:
        batch = pickle.loads(data, encoding="bytes")  # noqa: S301 - the official format is a pickle
    except Exception as exc:  # pickle raises many types on garbage
        raise DataError(f"{name}: corrupt: not a CIFAR-10 python batch ({type(exc).__name__})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{name}: corrupt: CIFAR-10 python batch lacks b'data' / b'labels'")
    images = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if images.ndim != 2 or images.shape[1] != 3072 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{name}: wrong sizes: data {images.shape}, labels {labels.shape}; expected (N, 3072), (N,)")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{name}: corrupt: labels outside 0..{num_classes - 1}")
    return images.reshape(-1, 3, 32, 32), labels.astype(np.uint8)
