"""Save and load a :class:`~sparsetopo.topology.Topology` as one ``.npz`` file.

The file holds a JSON header (``header``, UTF-8 bytes) and, per layer ``i``, the boolean adjacency: as
the CSR index arrays ``indptr_i`` and ``indices_i``, or, when that is smaller (a layer denser than about
1/32), as the bit-packed dense matrix ``bits_i`` (row-major, ``n_in x n_out`` bits). A conv layer's
weight-level mask is stored bit-packed as ``kernel_i``. Nothing is pickled. Loading checks every array
against the header. Version 1 files (index arrays only) still load.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from sparsetopo.errors import ConfigError
from sparsetopo.fileio import atomic_path
from sparsetopo.topology.core import Topology, _canonical_csr

FORMAT = "sparsetopo.topology"
VERSION = 2
READABLE = (1, 2)


def _index_dtype(limit: int) -> type:
    return np.int32 if limit < np.iinfo(np.int32).max else np.int64


ENCODINGS = ("auto", "indices", "bits")


def save_topology(topo: Topology, path: str | os.PathLike[str], *, encoding: str = "auto") -> None:
    """Write ``topo`` to ``path`` (exactly that name) atomically. ``encoding``: each layer as CSR index
    arrays (``indices``), as a bit mask (``bits``), or whichever is smaller (``auto``)."""
    if encoding not in ENCODINGS:
        raise ConfigError(f"encoding {encoding!r} is not allowed; choose one of: {', '.join(ENCODINGS)}")
    arrays: dict[str, np.ndarray] = {}
    layers = []
    for i, m in enumerate(topo.layers):
        dt = _index_dtype(max(m.shape[1], m.nnz))
        smaller = (m.shape[0] * m.shape[1] + 7) // 8 < m.nnz * np.dtype(dt).itemsize
        if encoding == "bits" or (encoding == "auto" and smaller):
            arrays[f"bits_{i}"] = np.packbits(m.toarray().reshape(-1))
        else:
            arrays[f"indptr_{i}"] = m.indptr.astype(dt)
            arrays[f"indices_{i}"] = m.indices.astype(dt)
        km = topo.kernel_masks[i]
        if km is not None:
            arrays[f"kernel_{i}"] = np.packbits(km.reshape(-1))
        layers.append(
            {"shape": [int(m.shape[0]), int(m.shape[1])], "nnz": int(m.nnz),
             "kernel_shape": None if km is None else [int(s) for s in km.shape]}
        )
    header = {"format": FORMAT, "version": VERSION, "names": topo.names, "meta": topo.meta, "layers": layers}
    arrays["header"] = np.frombuffer(json.dumps(header, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds clash with allow_pickle: bool


def _bad(path: Any, problem: str) -> ConfigError:
    return ConfigError(f"topology file {str(path)!r}: {problem}")


def _check_indptr(path: Any, i: int, indptr: np.ndarray, rows: int, nnz: int) -> None:
    """A CSR row pointer: ``rows + 1`` entries, starting at 0, non-decreasing, ending at ``nnz``."""
    if indptr.shape[0] != rows + 1:
        raise _bad(path, f"layer {i}: indptr has {indptr.shape[0]} entries, must have {rows + 1} ({rows} rows + 1)")
    if indptr[0] != 0:
        raise _bad(path, f"layer {i}: indptr[0] is {int(indptr[0])}, must be 0")
    drops = np.flatnonzero(np.diff(indptr) < 0)
    if drops.size:
        j = int(drops[0])
        raise _bad(path, f"layer {i}: indptr decreases from indptr[{j}] = {int(indptr[j])} to indptr[{j + 1}] = "
                         f"{int(indptr[j + 1])}, must be non-decreasing")
    if indptr[-1] != nnz:
        raise _bad(path, f"layer {i}: indptr ends at {int(indptr[-1])} (indptr[{rows}]), must equal the header's "
                         f"nnz {nnz}")


def _from_bits(path: Any, i: int, packed: np.ndarray, n_in: int, n_out: int, nnz: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """CSR index arrays of a bit-packed ``n_in x n_out`` adjacency, checked against the header."""
    size = n_in * n_out
    if packed.dtype != np.uint8 or packed.ndim != 1 or packed.shape[0] != (size + 7) // 8:
        raise _bad(path, f"layer {i}: bit mask has {packed.size} bytes, expected {(size + 7) // 8} for shape "
                         f"{[n_in, n_out]}")
    dense = np.unpackbits(packed, count=size).astype(bool).reshape(n_in, n_out)
    if int(dense.sum()) != nnz:
        raise _bad(path, f"layer {i}: bit mask has {int(dense.sum())} connections, header says nnz {nnz}")
    rows, cols = np.nonzero(dense)
    indptr = np.zeros(n_in + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_in), out=indptr[1:])
    return indptr, cols.astype(np.int64)


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read a topology written by :func:`save_topology`, refusing corrupt or inconsistent files."""
    p = Path(path)
    if not p.is_file():
        raise _bad(path, "no such file")
    try:
        with np.load(p, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, zipfile.LargeZipFile) as exc:
        raise _bad(path, f"not a readable .npz archive ({exc})") from None
    except Exception as exc:  # zlib.error and friends from a damaged member
        raise _bad(path, f"damaged archive ({type(exc).__name__}: {exc})") from None
    if "header" not in data:
        raise _bad(path, "no 'header' entry: not a sparsetopo topology file")
    try:
        header = json.loads(bytes(data["header"].astype(np.uint8)).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(path, f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _bad(path, f"header format is {header.get('format') if isinstance(header, dict) else header!r}, expected {FORMAT!r}")
    if header.get("version") not in READABLE:
        raise _bad(path, f"unsupported version {header.get('version')!r} (this build reads versions "
                         f"{', '.join(map(str, READABLE))})")
    specs = header.get("layers")
    if not isinstance(specs, list) or not specs:
        raise _bad(path, "header lists no layers")
    layers = []
    kms: list[np.ndarray | None] = []
    for i, spec in enumerate(specs):
        try:
            n_in, n_out = (int(v) for v in spec["shape"])
            nnz = int(spec["nnz"])
            kshape = spec["kernel_shape"]
        except (KeyError, TypeError, ValueError):
            raise _bad(path, f"layer {i}: malformed header entry {spec!r}") from None
        if n_in < 1 or n_out < 1 or nnz < 0:
            raise _bad(path, f"layer {i}: invalid shape {[n_in, n_out]} or nnz {nnz}")
        indptr: np.ndarray | None
        indices: np.ndarray | None
        if f"bits_{i}" in data:
            indptr, indices = _from_bits(path, i, data[f"bits_{i}"], n_in, n_out, nnz)
            if f"indptr_{i}" in data or f"indices_{i}" in data:
                raise _bad(path, f"layer {i}: both a bit mask and index arrays")
        else:
            indptr, indices = data.get(f"indptr_{i}"), data.get(f"indices_{i}")
        try:
            if indptr is None or indices is None:
                raise KeyError(f"indptr_{i}" if indptr is None else f"indices_{i}")
        except KeyError as exc:
            raise _bad(path, f"layer {i}: missing array {exc.args[0]!r}") from None
        if indptr.ndim != 1 or indices.ndim != 1 or not np.issubdtype(indptr.dtype, np.integer) \
                or not np.issubdtype(indices.dtype, np.integer):
            raise _bad(path, f"layer {i}: index arrays are not 1-D integer arrays")
        _check_indptr(path, i, indptr, n_in, nnz)
        if indices.shape[0] != nnz:
            raise _bad(path, f"layer {i}: {indices.shape[0]} column indices, header says nnz {nnz}")
        if nnz and (indices.min() < 0 or indices.max() >= n_out):
            raise _bad(path, f"layer {i}: column index out of range 0..{n_out - 1}")
        # within a row, indices must be strictly increasing (canonical, no duplicates)
        if nnz > 1:
            step = np.diff(indices.astype(np.int64))
            row_start = np.zeros(nnz, dtype=bool)
            row_start[indptr[:-1][indptr[:-1] < nnz]] = True
            if np.any((step <= 0) & ~row_start[1:]):
                raise _bad(path, f"layer {i}: column indices unsorted or duplicated within a row")
        layers.append(_canonical_csr(indices, indptr, (n_in, n_out)))
        if kshape is None:
            if f"kernel_{i}" in data:
                raise _bad(path, f"layer {i}: kernel mask present but header says fully-connected")
            kms.append(None)
            continue
        try:
            kshape = [int(v) for v in kshape]
        except (TypeError, ValueError):
            raise _bad(path, f"layer {i}: malformed kernel shape {kshape!r}") from None
        if len(kshape) != 4 or min(kshape) < 1:
            raise _bad(path, f"layer {i}: invalid kernel shape {kshape}")
        if f"kernel_{i}" not in data:
            raise _bad(path, f"layer {i}: missing array 'kernel_{i}'")
        packed = data[f"kernel_{i}"]
        size = int(np.prod(kshape))
        if packed.dtype != np.uint8 or packed.ndim != 1 or packed.shape[0] != (size + 7) // 8:
            raise _bad(path, f"layer {i}: kernel mask has {packed.size} bytes, expected {(size + 7) // 8} for shape {kshape}")
        kms.append(np.unpackbits(packed, count=size).astype(bool).reshape(kshape))
    extra = set(data) - {"header"} - {f"{k}_{i}" for i in range(len(specs))
                                      for k in ("indptr", "indices", "kernel", "bits")}
    if extra:
        raise _bad(path, f"unexpected arrays {sorted(extra)}")
    try:
        return Topology._from_canonical(layers, names=header.get("names"), kernel_masks=kms, meta=header.get("meta") or {})
    except ConfigError as exc:
        raise _bad(path, str(exc)) from None
