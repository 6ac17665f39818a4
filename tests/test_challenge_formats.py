"""Challenge file formats: round trips, strict refusals, the binary cache."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sparsetopo.challenge import (
    load_inputs_file,
    load_network,
    read_inputs,
    read_truth,
    read_weights,
    write_inputs,
    write_truth,
    write_weights,
)
from sparsetopo.challenge.files import cache_root
from sparsetopo.challenge.generate import generate_layers
from sparsetopo.errors import DataError


def _random_layer(n: int, k: int, seed: int, values: bool = False) -> sp.csr_array:
    rng = np.random.default_rng(seed)
    cols = np.sort(np.stack([rng.choice(n, k, replace=False) for _ in range(n)]), axis=1)
    data = rng.uniform(-1, 1, n * k) if values else np.full(n * k, 0.0625)
    return sp.csr_array((data, cols.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))


@pytest.mark.parametrize("suffix", [".tsv", ".tsv.gz"])
def test_weights_round_trip_exact(tmp_path: Path, suffix: str) -> None:
    layer = _random_layer(64, 32, 0, values=True)
    path = tmp_path / f"n64-l1{suffix}"
    write_weights(path, layer)
    back = read_weights(path, 64)
    assert (back != layer).nnz == 0
    assert np.array_equal(back.data, layer.data)


def test_weights_written_in_official_style(tmp_path: Path) -> None:
    layer = generate_layers(1024, 1)[0]
    path = tmp_path / "n1024-l1.tsv"
    write_weights(path, layer)
    lines = path.read_text().splitlines()
    assert len(lines) == 32768
    # official order: by column, then row; 1-based; the official value text
    assert lines[:3] == ["1\t1\t6.250000e-02", "2\t1\t6.250000e-02", "65\t1\t6.250000e-02"]


def test_official_layer_reads_and_matches_radix(data_root: Path) -> None:
    path = data_root / "graph-challenge" / "neuron1024" / "n1024-l1.tsv.gz"
    if not path.exists():
        pytest.skip("official challenge files not present")
    layer = read_weights(path, 1024)
    assert layer.nnz == 32768 and np.all(layer.data == 0.0625)
    assert (layer.astype(bool) != generate_layers(1024, 1)[0]).nnz == 0


def test_inputs_and_truth_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    dense = rng.random((50, 256)) < 0.1
    dense[7] = False                               # an empty image in the middle survives the round trip
    mat = sp.csr_array(dense.astype(np.float64))
    path = tmp_path / "sparse-images-256.tsv.gz"
    write_inputs(path, mat)
    back = read_inputs(path, 256)
    assert back.shape == (50, 256) and (back != mat).nnz == 0
    assert gzip.decompress(path.read_bytes()).split(b"\n")[0].endswith(b"\t1")
    truth = tmp_path / "truth.tsv"
    write_truth(truth, np.array([9, 3, 41]))
    assert truth.read_text() == "3\n9\n41\n"
    assert read_truth(truth).tolist() == [3, 9, 41]


def test_inputs_count_given_explicitly(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_text("1\t5\t1\n3\t2\t1\n")
    assert read_inputs(path, 8).shape == (3, 8)
    assert read_inputs(path, 8, n_inputs=10).shape == (10, 8)
    with pytest.raises(DataError, match=r"x.tsv line 2: row 3 is not an integer in 1..2"):
        read_inputs(path, 8, n_inputs=2)


BAD_INPUTS = [
    (b"1\t2\t1\n4\t5\n", r"line 2: expected 3 fields, got 2"),
    (b"1\t2\t1\n1\t3\t1 7\n", r"line 2: expected 3 fields, got 4"),
    (b"1\t2\tone\n", r"line 1: field 3 is not a decimal number: 'one'"),
    (b"1\t2\t1\n\n2\t2\t1\n", r"line 2: expected 3 fields, got 0"),
    (b"1.5\t2\t1\n", r"line 1: row 1.5 is not a positive integer"),
    (b"0\t2\t1\n", r"line 1: row 0 is not a positive integer"),
    (b"1\t2\t1\n1\t17\t1\n", r"line 2: column 17 is not an integer in 1..16"),
    (b"1\t2\t0\n", r"line 1: value 0 must be finite and nonzero"),
    (b"1\t2\t1e999\n", r"line 1: value inf must be finite and nonzero"),
    (b"1\t2\t1\n2\t2\t1\n1\t2\t1\n", r"line 3: entry \(1, 2\) repeats line 1"),
    (b"", r"file is empty"),
]


@pytest.mark.parametrize("payload, message", BAD_INPUTS)
def test_malformed_inputs_refused_with_file_and_line(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=message) as info:
        read_inputs(path, 16)
    assert str(path) in str(info.value)


def test_weights_need_the_promised_nonzeros_per_row(tmp_path: Path) -> None:
    layer = _random_layer(64, 32, 2).tolil()
    layer[5, np.flatnonzero(layer[[5], :].toarray())[0]] = 0
    path = tmp_path / "n64-l1.tsv"
    write_weights(path, sp.csr_array(layer))
    with pytest.raises(DataError, match=r"row 6 has 31 nonzeros; every row of a challenge layer has 32"):
        read_weights(path, 64)
    assert read_weights(path, 64, nnz_per_row=None).nnz == 64 * 32 - 1


def test_truth_refuses_repeats_and_bad_indices(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("4\n9\n4\n")
    with pytest.raises(DataError, match=r"t.tsv line 3: input 4 repeats line 1"):
        read_truth(path)
    path.write_text("4\n-2\n")
    with pytest.raises(DataError, match=r"line 2: input index -2 is not a positive integer"):
        read_truth(path)
    path.write_text("")
    assert read_truth(path).size == 0


def test_corrupt_gzip_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv.gz"
    path.write_bytes(gzip.compress(b"1\t1\t1\n")[:-6])
    with pytest.raises(DataError, match="gzip"):
        read_inputs(path, 4)


def _write_net(root: Path, n: int, layers: int) -> None:
    for l, layer in enumerate(generate_layers(n, layers, seed=3)):
        write_weights(root / f"neuron{n}" / f"n{n}-l{l + 1}.tsv", layer)


def test_network_cache_outside_data_root_and_reused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _write_net(root, 64, 7)
    os.chmod(root / "neuron64", 0o555)               # the data root may be read-only
    try:
        first = load_network(64, 7, root, bias=-0.3)
        assert Path(first.meta["cache"]).is_relative_to(cache_root())
        assert sorted(p.name for p in (root / "neuron64").iterdir()) == sorted(f"n64-l{k}.tsv" for k in range(1, 8))
        again = load_network(64, 7, root, bias=-0.3)
        assert isinstance(again.idx, np.memmap)
        direct = load_network(64, 7, root, bias=-0.3, cache=False)
        for l in range(7):
            assert (again.layer(l) != direct.layer(l)).nnz == 0
        assert np.array_equal(np.asarray(again.tidx), direct.tidx)
    finally:
        os.chmod(root / "neuron64", 0o755)


def test_damaged_or_stale_cache_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _write_net(root, 64, 6)
    net = load_network(64, 6, root, bias=-0.3)
    folder = Path(net.meta["cache"])
    (folder / "tidx.npy").write_bytes(b"garbage")
    rebuilt = load_network(64, 6, root, bias=-0.3)
    assert np.array_equal(np.asarray(rebuilt.tidx), np.asarray(load_network(64, 6, root, bias=-0.3, cache=False).tidx))
    # rewriting a layer file (new contents) changes the key: the new contents are read
    other = generate_layers(64, 7, seed=9)[6]
    path = root / "neuron64" / "n64-l6.tsv"
    write_weights(path, other)
    os.utime(path, ns=(1, 1))
    assert (load_network(64, 6, root, bias=-0.3).layer(5).astype(bool) != other).nnz == 0


def test_inputs_cache_round_trip(tmp_path: Path) -> None:
    mat = sp.csr_array((np.random.default_rng(4).random((20, 64)) < 0.2).astype(np.float64))
    path = tmp_path / "sparse-images-64.tsv"
    write_inputs(path, mat)
    assert (load_inputs_file(path, 64) != mat).nnz == 0
    assert (load_inputs_file(path, 64) != mat).nnz == 0     # second time from the cache
    with pytest.raises(DataError, match="no such inputs file"):
        load_inputs_file(tmp_path / "missing.tsv", 64)


def test_missing_network_files_named(tmp_path: Path) -> None:
    _write_net(tmp_path, 64, 3)
    with pytest.raises(DataError, match=r"n64-l4.tsv: missing .* has 3 consecutive layer files"):
        load_network(64, 4, tmp_path, bias=-0.3)
    with pytest.raises(DataError, match="no folder neuron128/"):
        load_network(128, 4, tmp_path, bias=-0.3)
