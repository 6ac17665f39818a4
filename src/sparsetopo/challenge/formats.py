"""The challenge's text formats, read strictly and written in the official style.

* weights ``nN-lK.tsv``: ``row<TAB>col<TAB>value`` per line, 1-based, input x output, ``N`` x ``N``;
* inputs ``sparse-images-N.tsv``: ``row<TAB>col<TAB>value``, row = input (image) index, col = neuron;
* truth ``neuronN-lL-categories.tsv``: 1-based input indices, one per line.

Any file may be gzip-compressed (name ending in ``.gz``). Every problem is a :class:`DataError` naming the
file and the 1-based line.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from sparsetopo.challenge._parse import _POW10, BAD_COUNT, BAD_NUMBER, parse_numbers
from sparsetopo.data.files import read_payload
from sparsetopo.errors import DataError
from sparsetopo.fileio import atomic_path

PathLike = str | os.PathLike[str]


def _line_text(data: bytes, number: int) -> str:
    start = 0
    for _ in range(number - 1):
        start = data.index(b"\n", start) + 1
    end = data.find(b"\n", start)
    return data[start:end if end >= 0 else len(data)].decode("utf-8", "replace").strip()[:60]


def _parse_table(data: bytes, name: PathLike, fields: int) -> np.ndarray:
    """The file as a (lines, fields) float64 array; every line must hold exactly ``fields`` numbers."""
    if not data.strip():
        raise DataError(f"{name}: file is empty")
    table, slow, status, line, got = parse_numbers(np.frombuffer(data, dtype=np.uint8), fields, _POW10)
    if status == BAD_COUNT:
        plural = "s" if fields > 1 else ""
        raise DataError(f"{name} line {line}: expected {fields} field{plural}, got {got}: {_line_text(data, line)!r}")
    if status == BAD_NUMBER:
        text = _line_text(data, line)
        parts = text.split()
        token = parts[got - 1] if got - 1 < len(parts) else text
        raise DataError(f"{name} line {line}: field {got} is not a decimal number: {token!r}")
    if len(slow):
        lines = data.split(b"\n")
        for line_no, field in slow.tolist():
            table[line_no, field] = float(lines[line_no].split()[field])
    return table


def _check_index(col: np.ndarray, name: PathLike, what: str, top: int | None) -> np.ndarray:
    """1-based integer indices in 1..top as 0-based int64."""
    bad = ~np.isfinite(col) | (col != np.floor(col)) | (col < 1)
    if top is not None:
        bad |= col > top
    if bad.any():
        line = int(np.flatnonzero(bad)[0])
        allowed = f"an integer in 1..{top}" if top is not None else "a positive integer"
        raise DataError(f"{name} line {line + 1}: {what} {col[line]:g} is not {allowed}")
    return col.astype(np.int64) - 1


def _check_values(vals: np.ndarray, name: PathLike) -> None:
    bad = ~np.isfinite(vals) | (vals == 0)
    if bad.any():
        line = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name} line {line + 1}: value {vals[line]:g} must be finite and nonzero")


def _check_duplicates(rows: np.ndarray, cols: np.ndarray, n_cols: int, name: PathLike) -> None:
    key = rows * n_cols + cols
    order = np.argsort(key, kind="stable")
    dup = np.flatnonzero(np.diff(key[order]) == 0)
    if dup.size:
        first, again = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
        raise DataError(f"{name} line {again + 1}: entry ({rows[again] + 1}, {cols[again] + 1}) repeats line {first + 1}")


def parse_weights(data: bytes, name: PathLike, neurons: int, *, nnz_per_row: int | None = 32) -> sp.csr_array:
    """A weight matrix from the bytes of an ``nN-lK.tsv`` file (see :func:`read_weights`)."""
    table = _parse_table(data, name, 3)
    rows = _check_index(table[:, 0], name, "row", neurons)
    cols = _check_index(table[:, 1], name, "column", neurons)
    _check_values(table[:, 2], name)
    _check_duplicates(rows, cols, neurons, name)
    if nnz_per_row is not None:
        counts = np.bincount(rows, minlength=neurons)
        bad = np.flatnonzero(counts != nnz_per_row)
        if bad.size:
            r = int(bad[0])
            raise DataError(
                f"{name}: row {r + 1} has {counts[r]} nonzeros; every row of a challenge layer has {nnz_per_row}"
            )
    mat = sp.csr_array((table[:, 2], (rows, cols)), shape=(neurons, neurons))
    mat.sort_indices()
    return mat


def read_weights(path: PathLike, neurons: int, *, nnz_per_row: int | None = 32) -> sp.csr_array:
    """One layer (float64 CSR, input x output, ``neurons`` square) from an ``nN-lK.tsv[.gz]`` file.

    Refused with a :class:`DataError` naming the line: a line without exactly three numbers, an index that is
    not an integer in 1..neurons, a zero or non-finite value, a repeated entry; and a row whose nonzero count
    differs from ``nnz_per_row`` (None: any count).
    """
    return parse_weights(read_payload(path), path, neurons, nnz_per_row=nnz_per_row)


def parse_inputs(data: bytes, name: PathLike, neurons: int, *, n_inputs: int | None = None) -> sp.csr_array:
    """Input rows from the bytes of a ``sparse-images-N.tsv`` file (see :func:`read_inputs`)."""
    table = _parse_table(data, name, 3)
    rows = _check_index(table[:, 0], name, "row", n_inputs)
    cols = _check_index(table[:, 1], name, "column", neurons)
    _check_values(table[:, 2], name)
    _check_duplicates(rows, cols, neurons, name)
    count = int(rows.max()) + 1 if n_inputs is None else n_inputs
    mat = sp.csr_array((table[:, 2], (rows, cols)), shape=(count, neurons))
    mat.sort_indices()
    return mat


def read_inputs(path: PathLike, neurons: int, *, n_inputs: int | None = None) -> sp.csr_array:
    """The input matrix (float64 CSR, inputs x neurons) from a ``sparse-images-N.tsv[.gz]`` file.

    The number of inputs is the largest row index unless ``n_inputs`` is given (then rows above it are
    refused). Same line checks as :func:`read_weights`, without the per-row count.
    """
    return parse_inputs(read_payload(path), path, neurons, n_inputs=n_inputs)


def parse_truth(data: bytes, name: PathLike, *, n_inputs: int | None = None) -> np.ndarray:
    """Categories from the bytes of a truth file (see :func:`read_truth`)."""
    if not data.strip():
        return np.zeros(0, dtype=np.int64)
    table = _parse_table(data, name, 1)
    cats = _check_index(table[:, 0], name, "input index", n_inputs) + 1
    order = np.argsort(cats, kind="stable")
    dup = np.flatnonzero(np.diff(cats[order]) == 0)
    if dup.size:
        first, again = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
        raise DataError(f"{name} line {again + 1}: input {cats[again]} repeats line {first + 1}")
    return cats[order]


def read_truth(path: PathLike, *, n_inputs: int | None = None) -> np.ndarray:
    """Sorted 1-based input indices (int64) from a ``neuronN-lL-categories.tsv[.gz]`` file (may be empty)."""
    return parse_truth(read_payload(path), path, n_inputs=n_inputs)


def _format_values(vals: np.ndarray) -> np.ndarray:
    """Each value as the official ``%e`` text when that reads back exactly, else the shortest exact repr."""
    uniq, inverse = np.unique(vals, return_inverse=True)
    texts = []
    for v in uniq:
        if float(v).is_integer() and abs(v) < 1e15:
            texts.append(str(int(v)))
            continue
        t = f"{v:e}"
        texts.append(t if float(t) == v else repr(float(v)))
    return np.asarray(texts, dtype=object)[inverse]


def _write_triples(path: PathLike, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
    texts = _format_values(np.asarray(vals, dtype=np.float64))
    lines = [f"{r}\t{c}\t{t}\n" for r, c, t in zip((rows + 1).tolist(), (cols + 1).tolist(), texts.tolist(), strict=True)]
    payload = "".join(lines).encode("ascii")
    p = Path(path)
    if p.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    with atomic_path(p) as tmp:
        tmp.write_bytes(payload)


def write_weights(path: PathLike, layer: sp.sparray | sp.spmatrix) -> None:
    """Write one layer (input x output) in the official order (by column, then row); ``.gz`` compresses."""
    coo = sp.coo_array(layer)
    coo.sum_duplicates()
    vals = coo.data.astype(np.float64) if coo.dtype != bool else np.full(coo.nnz, 0.0625)
    order = np.lexsort((coo.row, coo.col))
    _write_triples(path, coo.row[order].astype(np.int64), coo.col[order].astype(np.int64), vals[order])


def write_inputs(path: PathLike, inputs: sp.sparray | sp.spmatrix) -> None:
    """Write input rows (inputs x neurons) ordered by row, then column; ``.gz`` compresses."""
    coo = sp.coo_array(inputs)
    coo.sum_duplicates()
    vals = coo.data.astype(np.float64) if coo.dtype != bool else np.ones(coo.nnz)
    order = np.lexsort((coo.col, coo.row))
    _write_triples(path, coo.row[order].astype(np.int64), coo.col[order].astype(np.int64), vals[order])


def write_truth(path: PathLike, categories: np.ndarray) -> None:
    """Write 1-based input indices, one per line, ascending."""
    cats = np.unique(np.asarray(categories, dtype=np.int64))
    if cats.size and cats[0] < 1:
        raise DataError(f"{path}: categories must be 1-based positive indices, got {cats[0]}")
    payload = "".join(f"{c}\n" for c in cats.tolist()).encode("ascii")
    p = Path(path)
    if p.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    with atomic_path(p) as tmp:
        tmp.write_bytes(payload)
