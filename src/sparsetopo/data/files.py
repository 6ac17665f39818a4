"""Finding, reading and verifying dataset files under a data root."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparsetopo.data.formats import (
    parse_cifar_binary,
    parse_cifar_pickle,
    parse_idx_images,
    parse_idx_labels,
)
from sparsetopo.data.registry import DataFile, DatasetSpec
from sparsetopo.errors import DataError

CIFAR_PY_FOLDER = "cifar-10-batches-py"
_CIFAR_PY_NAMES = {f"data_batch_{i}.bin": f"data_batch_{i}" for i in range(1, 6)} | {"test_batch.bin": "test_batch"}


def default_root() -> Path:
    return Path.home() / ".cache" / "sparsetopo" / "data"


def resolve_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``data_dir`` if given, else ``$SPARSETOPO_DATA``, else ``~/.cache/sparsetopo/data``."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("SPARSETOPO_DATA")
    if env:
        return Path(env).expanduser()
    return default_root()


SYSTEM_ROOTS = (Path("/usr/share/datasets"),)  # Debian's dataset-* packages


def dataset_root(spec: DatasetSpec, root: Path) -> Path:
    """``root``, unless it holds none of the dataset's files and a system data folder (Debian's
    ``/usr/share/datasets``) holds them: then that folder, read in place."""
    if any(find_file(root, spec, item) for item in spec.files):
        return root
    for system in SYSTEM_ROOTS:
        if any(find_file(system, spec, item) for item in spec.files):
            return system
    return root


def find_file(root: Path, spec: DatasetSpec, item: DataFile) -> Path | None:
    """The file on disk for ``item``: plain or ``.gz``, or the CIFAR-10 python batch; None if absent."""
    folder = root / spec.folder
    for candidate in (folder / item.name, folder / f"{item.name}.gz"):
        if candidate.is_file():
            return candidate
    if spec.name == "cifar10":
        py = root / CIFAR_PY_FOLDER / _CIFAR_PY_NAMES[item.name]
        for candidate in (py, py.with_name(py.name + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def read_payload(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, gunzipped when it ends in ``.gz``; a missing file or damaged gzip stream is a DataError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        reason = "truncated" if isinstance(exc, EOFError) else "corrupt"
        raise DataError(f"{path}: {reason} gzip stream ({exc})") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_python_batch(path: Path) -> bool:
    return path.parent.name == CIFAR_PY_FOLDER


@dataclass
class FileStatus:
    name: str
    path: Path | None
    status: str  # "ok", "missing", "corrupt"
    detail: str = ""


def verify_dataset(spec: DatasetSpec, root: Path) -> list[FileStatus]:
    """Check every file of ``spec`` under ``root``: present, parseable, and the right SHA-256."""
    root = dataset_root(spec, root)
    result = []
    for item in spec.files:
        path = find_file(root, spec, item)
        if path is None:
            result.append(FileStatus(item.name, None, "missing"))
            continue
        try:
            payload = read_payload(path)
            if is_python_batch(path):
                parse_cifar_pickle(payload, str(path))  # a different encoding: no published checksum to match
            else:
                digest = sha256(payload)
                if digest != item.sha256:
                    raise DataError(f"{path}: checksum mismatch: sha256 {digest[:16]}..., expected {item.sha256[:16]}...")
                _parse(spec, item, payload, str(path))
        except DataError as exc:
            result.append(FileStatus(item.name, path, "corrupt", str(exc)))
            continue
        result.append(FileStatus(item.name, path, "ok"))
    return result


def _parse(spec: DatasetSpec, item: DataFile, payload: bytes, name: str):
    if item.role.endswith("_images"):
        _, h, w = spec.input_shape
        return parse_idx_images(payload, name, h, w)
    if item.role.endswith("_labels"):
        return parse_idx_labels(payload, name, spec.num_classes)
    return parse_cifar_binary(payload, name, spec.num_classes)


@dataclass
class RawDataset:
    """A dataset as uint8 images (N, C, H, W) and uint8 labels, exactly as stored in the files."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def read_raw(spec: DatasetSpec, root: Path) -> RawDataset:
    """Read and strictly parse every file of ``spec`` under ``root`` (all must be present)."""
    root = dataset_root(spec, root)
    parts: dict[str, list] = {"train_images": [], "train_labels": [], "test_images": [], "test_labels": []}
    for item in spec.files:
        path = find_file(root, spec, item)
        if path is None:
            raise DataError(f"{root / spec.folder / item.name}: missing (run `sparsetopo data download --dataset {spec.name}`)")
        payload = read_payload(path)
        if is_python_batch(path):
            images, labels = parse_cifar_pickle(payload, str(path), spec.num_classes)
        else:
            parsed = _parse(spec, item, payload, str(path))
            if isinstance(parsed, tuple):
                images, labels = parsed
            elif item.role.endswith("_images"):
                parts[item.role].append(parsed[:, None, :, :])
                continue
            else:
                parts[item.role].append(parsed)
                continue
        split = "train" if item.role.startswith("train") else "test"
        parts[f"{split}_images"].append(images)
        parts[f"{split}_labels"].append(labels)
    arrays = {key: np.concatenate(value) for key, value in parts.items()}
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise DataError(f"{root / spec.folder}: {split} split has {n_img} images but {n_lab} labels")
    return RawDataset(spec.name, **arrays)
