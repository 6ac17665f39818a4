"""Datasets held in memory as normalised tensors."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import torch

from sparsetopo.data.download import download
from sparsetopo.data.files import RawDataset, read_raw, resolve_root, root_origin
from sparsetopo.data.registry import DatasetSpec, get_spec
from sparsetopo.errors import ConfigError


@dataclass
class Split:
    """Normalised float32 images (N, C, H, W) and int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    validation: Split | None
    input_shape: tuple[int, int, int]
    num_classes: int
    classes: tuple[str, ...]

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset resident on ``device`` (kept there for the whole run: no copy per batch)."""
        return replace(self, train=self.train.to(device), test=self.test.to(device),
                       validation=self.validation.to(device) if self.validation is not None else None)


def load_raw(
    name: str, data_dir: str | os.PathLike[str] | None = None, *, download_missing: bool = False,
    mirror: str | None = None, progress: bool | None = None,
) -> RawDataset:
    """The dataset's uint8 arrays exactly as stored; optionally download what is missing first."""
    spec = get_spec(name)
    root = resolve_root(data_dir)
    if download_missing:
        download(spec, root, mirror=mirror, progress=progress, origin=root_origin(data_dir))
    return read_raw(spec, root)


def _normalise(images: np.ndarray, spec: DatasetSpec) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)


def load_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, *, validation: int = 0, split_seed: int = 0,
    download_missing: bool = False, mirror: str | None = None, progress: bool | None = None,
) -> Dataset:
    """Load a dataset as normalised tensors (per-channel mean/std of the training set).

    ``validation`` > 0 carves that many examples, chosen by ``split_seed``, out of the training set.
    """
    spec = get_spec(name)
    if validation < 0:
        raise ConfigError(f"validation size {validation} is negative; use 0 (none) or a positive count")
    raw = load_raw(name, data_dir, download_missing=download_missing, mirror=mirror, progress=progress)
    n_train = len(raw.train_labels)
    if validation >= n_train:
        raise ConfigError(f"validation size {validation} must be smaller than the training set ({n_train})")
    images = _normalise(raw.train_images, spec)
    labels = torch.from_numpy(raw.train_labels.astype(np.int64))
    val = None
    if validation:
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(split_seed))
        held, kept = order[:validation].sort().values, order[validation:].sort().values
        val = Split(images[held], labels[held])
        images, labels = images[kept], labels[kept]
    test = Split(_normalise(raw.test_images, spec), torch.from_numpy(raw.test_labels.astype(np.int64)))
    return Dataset(spec.name, Split(images, labels), test, val, spec.input_shape, spec.num_classes, spec.classes)

