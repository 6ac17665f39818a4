"""Finding the challenge files under a data root, and the binary cache that makes reloads fast.

The data root (``--data-dir`` > ``$SPARSETOPO_DATA`` > ``~/.cache/sparsetopo/data``) is only read. The
challenge files are looked for in ``ROOT/graph-challenge/`` and then ``ROOT/`` itself, plain or ``.gz``:

    neuronN/nN-l1.tsv ... nN-lL.tsv        weights
    sparse-images-N.tsv                    inputs
    neuronN-lL-categories.tsv              truth

Parsed networks and inputs are cached as ``.npy`` files under ``user_cache_dir()/challenge/``, keyed by
the source files' paths, sizes and modification times; a stale or damaged cache entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from sparsetopo.challenge.formats import PathLike, read_inputs, read_truth, read_weights
from sparsetopo.challenge.network import (
    YMAX,
    ChallengeNetwork,
    column_width,
    default_bias,
    ell_rows,
    index_dtype,
    transpose_tables,
)
from sparsetopo.data.files import find_file, resolve_root
from sparsetopo.errors import ConfigError, DataError
from sparsetopo.fileio import atomic_path, atomic_write_json, user_cache_dir

CACHE_VERSION = 2
SUBFOLDER = "graph-challenge"


def challenge_dirs(data_dir: PathLike | None = None) -> list[Path]:
    """Folders searched for challenge files: ``ROOT/graph-challenge`` then ``ROOT``."""
    root = resolve_root(data_dir)
    return [root / SUBFOLDER, root]


def _find(name: str, data_dir: PathLike | None) -> Path | None:
    for folder in challenge_dirs(data_dir):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def weight_paths(neurons: int, layers: int, data_dir: PathLike | None = None) -> list[Path]:
    """The weight files of layers 1..layers; a missing one is a DataError naming it."""
    check_size(neurons, layers)
    folder = None
    for candidate in challenge_dirs(data_dir):
        if (candidate / f"neuron{neurons}").is_dir():
            folder = candidate / f"neuron{neurons}"
            break
    if folder is None:
        where = " or ".join(str(d) for d in challenge_dirs(data_dir))
        raise DataError(f"no folder neuron{neurons}/ with the {neurons}-neuron weights under {where}")
    paths = []
    for k in range(1, layers + 1):
        name = f"n{neurons}-l{k}.tsv"
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                paths.append(candidate)
                break
        else:
            raise DataError(f"{folder / name}: missing (needed for {layers} layers; the folder has "
                            f"{_count_layers(folder, neurons)} consecutive layer files)")
    return paths


def _count_layers(folder: Path, neurons: int) -> int:
    k = 0
    while (folder / f"n{neurons}-l{k + 1}.tsv").is_file() or (folder / f"n{neurons}-l{k + 1}.tsv.gz").is_file():
        k += 1
    return k


def inputs_path(neurons: int, data_dir: PathLike | None = None) -> Path | None:
    """``sparse-images-N.tsv[.gz]`` under the data root, or None."""
    return _find(f"sparse-images-{neurons}.tsv", data_dir)


def truth_path(neurons: int, layers: int, data_dir: PathLike | None = None) -> Path | None:
    """``neuronN-lL-categories.tsv[.gz]`` under the data root, or None."""
    return _find(f"neuron{neurons}-l{layers}-categories.tsv", data_dir)


def check_size(neurons: int, layers: int) -> None:
    if not isinstance(neurons, (int, np.integer)) or neurons < 2:
        raise ConfigError(f"neurons must be an integer >= 2, got {neurons!r}")
    if not isinstance(layers, (int, np.integer)) or layers < 1:
        raise ConfigError(f"layers must be a positive integer, got {layers!r}")


def cache_root() -> Path:
    return user_cache_dir() / "challenge"


def _fingerprint(paths: Sequence[Path], extra: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **extra}, sort_keys=True).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _read_meta(folder: Path, key: str) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("key") == key and meta.get("version") == CACHE_VERSION else None


def _load_npy(folder: Path, name: str, shape: Sequence[int], dtype: str, mmap: bool) -> np.ndarray:
    arr = np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
    if tuple(arr.shape) != tuple(shape) or str(arr.dtype) != dtype:
        raise ValueError(f"{name}.npy has shape {arr.shape} {arr.dtype}, expected {tuple(shape)} {dtype}")
    return arr


def load_network(
    neurons: int,
    layers: int,
    data_dir: PathLike | None = None,
    *,
    bias: float | None = None,
    nnz_per_row: int | None = 32,
    cache: bool = True,
    mmap: bool = True,
    progress: Any = None,
) -> ChallengeNetwork:
    """The ``neurons`` x ``layers`` network from its TSV files under the data root, via the binary cache.

    The first load parses and validates every file (see :func:`read_weights`) and writes the ELL tables to
    the cache; later loads memory-map them (``mmap``), so the weights of a large network are paged in as the
    engine reaches them. ``bias`` defaults to the official one for the size. ``progress(k, total)`` is
    called after each parsed file.
    """
    paths = weight_paths(neurons, layers, data_dir)
    b = default_bias(neurons) if bias is None else float(bias)
    meta = {"source": str(paths[0].parent), "neurons": neurons, "layers": layers}
    if not cache:
        mats = []
        for k, p in enumerate(paths):
            mats.append(read_weights(p, neurons, nnz_per_row=nnz_per_row))
            if progress:
                progress(k + 1, len(paths))
        return ChallengeNetwork.from_layers(mats, b, meta=meta)
    key = _fingerprint(paths, {"kind": "network", "n": neurons, "nnz_per_row": nnz_per_row})
    folder = cache_root() / f"n{neurons}-l{layers}-{key}"
    stored = _read_meta(folder, key)
    if stored is not None:
        try:
            return _open_network(folder, stored, b, mmap, meta)
        except (OSError, ValueError):
            pass                                  # damaged entry: rebuild it below
    _build_network_cache(paths, folder, key, neurons, nnz_per_row, progress)
    return _open_network(folder, _read_meta(folder, key) or {}, b, mmap, meta)


def _open_network(folder: Path, stored: dict[str, Any], bias: float, mmap: bool,
                  meta: dict[str, Any]) -> ChallengeNetwork:
    n, n_layers, k, kt, itype = (stored["neurons"], stored["layers"], stored["k"], stored["kt"], stored["itype"])
    idx = _load_npy(folder, "idx", (n_layers, n, k), itype, mmap)
    tidx = _load_npy(folder, "tidx", (n_layers, n, kt), itype, mmap)
    nnz = _load_npy(folder, "nnz", (n_layers,), "int64", False)
    if stored["uniform"]:
        weight = _load_npy(folder, "weight", (n_layers,), "float64", False)
        values = tvalues = None
    else:
        weight = None
        values = _load_npy(folder, "values", (n_layers, n, k), "float64", mmap)
        tvalues = _load_npy(folder, "tvalues", (n_layers, n, kt), "float64", mmap)
    return ChallengeNetwork(n, bias, idx, tidx, nnz, weight, values, tvalues, YMAX, {**meta, "cache": str(folder)})


def _build_network_cache(paths: Sequence[Path], folder: Path, key: str, n: int, nnz_per_row: int | None,
                         progress: Any) -> None:
    """Parse the layer files one at a time into memory-mapped tables, then write meta.json last."""
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    n_layers = len(paths)
    first = read_weights(paths[0], n, nnz_per_row=nnz_per_row)
    k = int(np.diff(first.indptr).max(initial=0)) or 1
    padded = nnz_per_row is None
    itype = index_dtype(n, padded)
    nnz = np.zeros(n_layers, dtype=np.int64)
    weight = np.zeros(n_layers)
    values: np.ndarray | None = None
    with atomic_path(folder / "idx.npy") as tmp_idx:
        idx = np.lib.format.open_memmap(tmp_idx, mode="w+", dtype=itype, shape=(n_layers, n, k))
        tmp_vals = None
        for l, p in enumerate(paths):
            mat = first if l == 0 else read_weights(p, n, nnz_per_row=nnz_per_row)
            if np.diff(mat.indptr).max(initial=0) > k:
                raise DataError(f"{p}: rows have up to {np.diff(mat.indptr).max()} nonzeros; layer 1 has {k} "
                                f"(give a fixed nnz per row to read networks with varying widths)")
            rows_idx, rows_val = ell_rows(mat, k, itype)
            idx[l] = rows_idx
            nnz[l] = mat.nnz
            uniform_layer = mat.nnz > 0 and bool(np.all(mat.data == mat.data[0]))
            weight[l] = mat.data[0] if mat.nnz else 0.0625
            if values is None and not uniform_layer and mat.nnz:
                tmp_vals = folder / ".values.npy.tmp"
                values = np.lib.format.open_memmap(tmp_vals, mode="w+", dtype=np.float64, shape=(n_layers, n, k))
                for q in range(l):
                    values[q] = np.where(np.asarray(idx[q]) < n, weight[q], 0.0)
            if values is not None:
                values[l] = rows_val
            if progress:
                progress(l + 1, n_layers)
        idx.flush()
        kt = column_width(idx, n)
        with atomic_path(folder / "tidx.npy") as tmp_t:
            tidx = np.lib.format.open_memmap(tmp_t, mode="w+", dtype=itype, shape=(n_layers, n, kt))
            tvalues = None
            if values is not None:
                tvalues = np.lib.format.open_memmap(folder / ".tvalues.npy.tmp", mode="w+", dtype=np.float64,
                                                    shape=(n_layers, n, kt))
            transpose_tables(idx, values, n, out=tidx, tout=tvalues)
            tidx.flush()
            del tidx
        del idx
    if values is not None:
        values.flush()
        tvalues.flush()
        del values, tvalues
        os.replace(folder / ".values.npy.tmp", folder / "values.npy")
        os.replace(folder / ".tvalues.npy.tmp", folder / "tvalues.npy")
    else:
        _save(folder / "weight.npy", weight)
    _save(folder / "nnz.npy", nnz)
    atomic_write_json(folder / "meta.json", {
        "version": CACHE_VERSION, "key": key, "neurons": n, "layers": n_layers, "k": k, "kt": kt,
        "itype": str(np.dtype(itype)), "uniform": tmp_vals is None,
        "sources": [str(p) for p in paths[:1]] + ([str(paths[-1])] if n_layers > 1 else []),
    })


def _save(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def load_inputs_file(path: PathLike, neurons: int, *, n_inputs: int | None = None,
                     cache: bool = True) -> sp.csr_array:
    """An inputs file as CSR (float64), via the binary cache (see :func:`read_inputs`)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such inputs file")
    if not cache:
        return read_inputs(p, neurons, n_inputs=n_inputs)
    key = _fingerprint([p], {"kind": "inputs", "n": neurons, "n_inputs": n_inputs})
    return _cached_csr(cache_root() / f"inputs-{neurons}-{key}.npz", neurons,
                       lambda: read_inputs(p, neurons, n_inputs=n_inputs))


def _cached_csr(entry: Path, neurons: int, compute) -> sp.csr_array:
    """The matrix cached at ``entry`` when it is there and ``neurons`` wide, else ``compute()``, then cached."""
    mat = load_csr(entry)
    if mat is not None and mat.shape[1] == neurons:
        return mat
    mat = compute()
    save_csr(entry, mat)
    return mat


def save_csr(path: Path, mat: sp.csr_array) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, data=mat.data, indices=mat.indices, indptr=mat.indptr, shape=np.array(mat.shape))


def load_csr(path: Path) -> sp.csr_array | None:
    """A CSR matrix saved by :func:`save_csr`, or None when the file is missing or damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            shape = tuple(int(s) for s in z["shape"])
            mat = sp.csr_array((z["data"], z["indices"], z["indptr"]), shape=shape)
        mat.check_format(full_check=False)
        return mat
    except (OSError, ValueError, KeyError, EOFError):
        return None


def load_truth(neurons: int, layers: int, data_dir: PathLike | None = None) -> np.ndarray | None:
    """The official truth categories for the size, when its file is under the data root."""
    p = truth_path(neurons, layers, data_dir)
    return None if p is None else read_truth(p)


def cached_mnist_inputs(neurons: int, data_dir: PathLike | None = None, *, threshold: float | None = None,
                        cache: bool = True) -> sp.csr_array:
    """All 60,000 inputs regenerated from MNIST (see :func:`~sparsetopo.challenge.generate.mnist_inputs`),
    cached keyed by the MNIST training-image file and the threshold."""
    from sparsetopo.challenge.generate import MNIST_THRESHOLD, mnist_inputs
    from sparsetopo.data import get_spec

    t = MNIST_THRESHOLD if threshold is None else float(threshold)
    spec = get_spec("mnist")
    root = resolve_root(data_dir)
    item = next(f for f in spec.files if f.role == "train_images")
    source = find_file(root, spec, item)
    if source is None or not cache:
        return mnist_inputs(neurons, data_dir, threshold=t)     # a missing file raises the loader's error
    key = _fingerprint([source], {"kind": "mnist-inputs", "n": neurons, "threshold": repr(t)})
    return _cached_csr(cache_root() / f"mnist-inputs-{neurons}-{key}.npz", neurons,
                       lambda: mnist_inputs(neurons, data_dir, threshold=t))


def cached_generated_network(neurons: int, layers: int, seed: int = 0, *, bias: float | None = None,
                             radix: int = 2, block: int = 16) -> ChallengeNetwork:
    """:func:`~sparsetopo.challenge.generate.generate_network`, built layer by layer into memory-mapped
    tables in the cache (so a 65,536-neuron, 1,920-layer network never has to fit in memory) and reused."""
    from sparsetopo.challenge.generate import WEIGHT, base_systems, layer_tables

    base_systems(neurons, radix, block)
    check_size(neurons, layers)
    b = default_bias(neurons) if bias is None else float(bias)
    key = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "kind": "generated", "n": neurons, "layers": layers,
                                     "seed": seed, "radix": radix, "block": block}).encode()).hexdigest()[:20]
    folder = cache_root() / f"generated-n{neurons}-l{layers}-s{seed}-{key}"
    meta = {"kind": "generated", "seed": seed, "radix": radix, "block": block, "source": "generated"}
    stored = _read_meta(folder, key)
    if stored is not None:
        try:
            return _open_network(folder, stored, b, True, meta)
        except (OSError, ValueError):
            pass
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    k = radix * block
    itype = index_dtype(neurons, False)
    with atomic_path(folder / "idx.npy") as tmp_idx:
        idx = np.lib.format.open_memmap(tmp_idx, mode="w+", dtype=itype, shape=(layers, neurons, k))
        for l, table in enumerate(layer_tables(neurons, layers, seed, radix=radix, block=block)):
            idx[l] = table
        idx.flush()
        with atomic_path(folder / "tidx.npy") as tmp_t:
            tidx = np.lib.format.open_memmap(tmp_t, mode="w+", dtype=itype, shape=(layers, neurons, k))
            transpose_tables(idx, None, neurons, out=tidx)
            tidx.flush()
            del tidx
        del idx
    _save(folder / "weight.npy", np.full(layers, WEIGHT))
    _save(folder / "nnz.npy", np.full(layers, neurons * k, dtype=np.int64))
    atomic_write_json(folder / "meta.json", {
        "version": CACHE_VERSION, "key": key, "neurons": neurons, "layers": layers, "k": k, "kt": k,
        "itype": str(np.dtype(itype)), "uniform": True, "sources": ["generated"],
    })
    return _open_network(folder, _read_meta(folder, key) or {}, b, True, meta)
