"""Datasets of the user's own: ``--dataset package.module:factory``.

The factory takes no arguments and returns either a :class:`~sparsetopo.data.Dataset` or the tuple
``(train_images, train_labels, test_images, test_labels)``: float images ``(N, C, H, W)`` (already
normalised as the user wants them) and integer labels ``0 .. K-1``. The factory's import path names the
run; it should return the same data every time (a fixed file, a fixed seed).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from sparsetopo.data.tensors import Dataset, Split
from sparsetopo.desc.factories import is_factory, load_factory
from sparsetopo.errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    """What a run needs to know of a dataset before it trains: shapes and sizes."""

    input_shape: tuple[int, int, int]
    num_classes: int
    train_examples: int


def _tensor(value: Any, what: str, name: str, dtype: torch.dtype) -> torch.Tensor:
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"--dataset {name}: {what} is not an array ({type(value).__name__})") from None
    return t.to(dtype)


@functools.lru_cache(maxsize=4)
def load_factory_dataset(name: str) -> Dataset:
    factory = load_factory(name, "--dataset")
    try:
        data = factory()
    except Exception as exc:  # the user's code failed: say so in one line, with its own message
        raise ConfigError(f"--dataset {name}: the factory raised {type(exc).__name__}: {exc} (it is called with no "
                          "arguments)") from None
    if isinstance(data, Dataset):
        return data
    if not isinstance(data, (tuple, list)) or len(data) != 4:
        raise ConfigError(f"--dataset {name}: the factory must return a Dataset or (train_images, train_labels, "
                          "test_images, test_labels)")
    xtr, ytr, xte, yte = (_tensor(v, w, name, dt) for v, w, dt in zip(
        data, ("train_images", "train_labels", "test_images", "test_labels"),
        (torch.float32, torch.int64, torch.float32, torch.int64)))
    for what, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ConfigError(f"--dataset {name}: {what} images must be (N, C, H, W) with N labels, got "
                              f"{tuple(x.shape)} and {tuple(y.shape)}")
    if tuple(xtr.shape[1:]) != tuple(xte.shape[1:]):
        raise ConfigError(f"--dataset {name}: train images are {tuple(xtr.shape[1:])}, test images "
                          f"{tuple(xte.shape[1:])}")
    classes = int(max(int(ytr.max()), int(yte.max())) + 1)
    if int(min(int(ytr.min()), int(yte.min()))) < 0:
        raise ConfigError(f"--dataset {name}: labels must be 0 .. K-1")
    shape = (int(xtr.shape[1]), int(xtr.shape[2]), int(xtr.shape[3]))
    return Dataset(name, Split(xtr.contiguous(), ytr), Split(xte.contiguous(), yte), None, shape, classes,
                   tuple(str(i) for i in range(classes)))


def with_validation(data: Dataset, validation: int, split_seed: int = 0) -> Dataset:
    """``data`` with ``validation`` training examples held out (chosen by ``split_seed``)."""
    n = len(data.train)
    if validation >= n:
        raise ConfigError(f"validation size {validation} must be smaller than the training set ({n})")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    held, kept = order[:validation].sort().values, order[validation:].sort().values
    return Dataset(data.name, Split(data.train.images[kept], data.train.labels[kept]), data.test,
                   Split(data.train.images[held], data.train.labels[held]), data.input_shape, data.num_classes,
                   data.classes)


def dataset_info(name: str) -> DatasetInfo:
    """Shapes and sizes of a registry dataset (from the registry) or a factory's (by loading it, once)."""
    from sparsetopo.data.registry import get_spec

    if is_factory(name):
        data = load_factory_dataset(name)
        return DatasetInfo(data.input_shape, data.num_classes, len(data.train))
    spec = get_spec(name)
    return DatasetInfo(spec.input_shape, spec.num_classes, spec.train_examples)
