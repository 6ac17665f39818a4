"""Finding, reading and verifying dataset files under a data root."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparsetopo.data.formats import (
    parse_cifar_binary,
    parse_cifar_pickle,
    parse_idx_images,
    parse_idx_labels,
)
from sparsetopo.data.registry import DataFile, DatasetSpec
from sparsetopo.errors import DataError
from sparsetopo.fileio import atomic_write_json, user_cache_dir

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


def root_origin(data_dir: str | os.PathLike[str] | None = None) -> str:
    """Where :func:`resolve_root` takes the root from, for messages: ``--data-dir``, ``$SPARSETOPO_DATA`` or
    ``default``."""
    if data_dir:
        return "--data-dir"
    return "$SPARSETOPO_DATA" if os.environ.get("SPARSETOPO_DATA") else "default"


def origin_of(root: Path) -> str:
    """The most likely origin of a root handed over as a path: ``$SPARSETOPO_DATA`` or ``default`` when it is
    that folder, else ``--data-dir``."""
    env = os.environ.get("SPARSETOPO_DATA")
    if env and Path(env).expanduser() == root:
        return "$SPARSETOPO_DATA"
    return "default" if root == default_root() and not env else "--data-dir"


def describe_origin(origin: str) -> str:
    if origin == "default":
        return "the default cache, as neither --data-dir nor $SPARSETOPO_DATA is set"
    return f"from {origin}"


def fix_advice(origin: str) -> str:
    """How to point the package at a folder that has the files, without advising what is already done."""
    if origin == "--data-dir":
        return "or pass a --data-dir that holds them"
    if origin == "$SPARSETOPO_DATA":
        return "or point $SPARSETOPO_DATA (or --data-dir) at a folder that holds them"
    return "or pass --data-dir or set $SPARSETOPO_DATA to a folder that holds them"


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


# ------------------------------------------------------------------------------------------ checksum cache
# A file whose SHA-256 matched once is remembered by its resolved path, size and mtime_ns (and the digest it
# matched), so that loading it again costs no hashing. The cache is an optimisation: unreadable or corrupt,
# it is ignored and rewritten; unwritable, it is skipped.

CHECKSUM_CACHE = "data-checksums.json"
_CACHE_VERSION = 1


def checksum_cache_file() -> Path:
    return user_cache_dir() / CHECKSUM_CACHE


def _read_checksum_cache() -> dict[str, Any]:
    try:
        obj = json.loads(checksum_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(obj, dict) or obj.get("version") != _CACHE_VERSION or not isinstance(obj.get("files"), dict):
        return {}
    return obj["files"]


def _write_checksum_cache(new: dict[str, Any]) -> None:
    files = _read_checksum_cache()  # merge with what other processes recorded meanwhile
    files.update(new)
    files = {k: v for k, v in files.items() if os.path.exists(k)}
    try:
        atomic_write_json(checksum_cache_file(), {"version": _CACHE_VERSION, "files": files})
    except OSError:
        pass


def _stamp(path: Path, expected: str) -> tuple[str, dict[str, Any]]:
    st = path.stat()
    return str(path.resolve()), {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": expected}


def _check_digest(spec: DatasetSpec, item: DataFile, path: Path, payload: bytes, advise: bool = True) -> None:
    digest = sha256(payload)
    if digest != item.sha256:
        raise DataError(f"{path}: checksum mismatch: sha256 {digest[:16]}..., expected {item.sha256[:16]}..."
                        + (f" (damaged or not the official {item.name}; run `sparsetopo data verify`, then replace "
                           f"it or delete it and run `sparsetopo data download --dataset {spec.name}`)"
                           if advise else ""))


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
    verified: dict[str, Any] = {}
    for item in spec.files:
        path = find_file(root, spec, item)
        if path is None:
            result.append(FileStatus(item.name, None, "missing"))
            continue
        try:
            key, stamp = _stamp(path, item.sha256)
            payload = read_payload(path)
            if is_python_batch(path):
                parse_cifar_pickle(payload, str(path))  # a different encoding: no published checksum to match
            else:
                _check_digest(spec, item, path, payload, advise=False)
                _parse(spec, item, payload, str(path))
                verified[key] = stamp
        except DataError as exc:
            result.append(FileStatus(item.name, path, "corrupt", str(exc)))
            continue
        result.append(FileStatus(item.name, path, "ok"))
    if verified:
        _write_checksum_cache(verified)
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
    """Read and strictly parse every file of ``spec`` under ``root`` (all must be present).

    Each file's SHA-256 is checked against the registry the first time it is read; a match is remembered
    (see :func:`checksum_cache_file`) so that later loads of the unchanged file skip the hashing.
    """
    root = dataset_root(spec, root)
    parts: dict[str, list] = {"train_images": [], "train_labels": [], "test_images": [], "test_labels": []}
    known = _read_checksum_cache()
    verified: dict[str, Any] = {}
    for item in spec.files:
        path = find_file(root, spec, item)
        if path is None:
            raise DataError(f"{root / spec.folder / item.name}: missing (run `sparsetopo data download --dataset {spec.name}`)")
        python_batch = is_python_batch(path)
        if not python_batch:  # the stamp before the read: a file changed meanwhile is not taken as checked
            key, stamp = _stamp(path, item.sha256)
        payload = read_payload(path)
        if python_batch:
            images, labels = parse_cifar_pickle(payload, str(path), spec.num_classes)
        else:
            parsed = _parse(spec, item, payload, str(path))
            if known.get(key) != stamp:
                _check_digest(spec, item, path, payload)
                verified[key] = stamp
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
    if verified:
        _write_checksum_cache(verified)
    return RawDataset(spec.name, **arrays)
