"""Datasets: MNIST, Fashion-MNIST and CIFAR-10 read strictly from their official files, held in memory as tensors.

>>> data = load_dataset("mnist")             # root from --data-dir / $SPARSETOPO_DATA / ~/.cache/sparsetopo/data
>>> data.train.images.shape, data.train.labels.dtype
(torch.Size([60000, 1, 28, 28]), torch.int64)
"""

from __future__ import annotations

from typing import Any

from sparsetopo.data.download import download, ensure_datasets
from sparsetopo.data.files import RawDataset, read_raw, resolve_root, verify_dataset
from sparsetopo.data.registry import DATASETS, get_spec

__all__ = [
    "DATASETS", "Dataset", "RawDataset", "Split", "get_spec", "load_dataset", "load_raw", "resolve_root",
    "verify_dataset", "download", "ensure_datasets", "read_raw",
]

_TENSORS = ("Dataset", "Split", "load_dataset", "load_raw")


def __getattr__(name: str) -> Any:
    # The tensor side imports torch: only when asked for, so `sparsetopo data verify` starts fast.
    if name in _TENSORS:
        from sparsetopo.data import tensors

        return getattr(tensors, name)
    raise AttributeError(f"module 'sparsetopo.data' has no attribute {name!r}")
