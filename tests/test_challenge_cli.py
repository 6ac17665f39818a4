"""``sparsetopo challenge run / generate / inputs``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sparsetopo.challenge import read_inputs, read_truth, read_weights
from sparsetopo.challenge.generate import generate_layers
from sparsetopo.cli import main


@pytest.fixture(scope="module")
def official(data_root: Path) -> Path:
    folder = data_root / "graph-challenge"
    if not (folder / "neuron1024").is_dir():
        pytest.skip("official challenge files not present")
    return folder


def test_run_official_first_1200_matches_truth(official: Path, data_root: Path, capsys) -> None:
    code = main(["challenge", "run", "--neurons", "1024", "--layers", "120", "--data-dir", str(data_root),
                 "--inputs", str(official / "sparse-images-1024-first1200.tsv.gz"), "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "3,932,160 edges" in out and "1,200" in out
    assert "truth       match: 19 of 19 categories (inputs 1..1200)" in out
    assert "edges/s" in out and "per core" in out


def test_run_mismatch_exits_1_listing_differences(official: Path, data_root: Path, tmp_path: Path, capsys) -> None:
    truth = read_truth(official / "neuron1024-l120-categories.tsv.gz")
    wrong = tmp_path / "truth.tsv"
    wrong.write_text("".join(f"{c}\n" for c in [5, 6] + [c for c in truth.tolist() if c != 287]))
    code = main(["challenge", "run", "--neurons", "1024", "--layers", "120", "--data-dir", str(data_root),
                 "--inputs", str(official / "sparse-images-1024-first1200.tsv.gz"), "--truth", str(wrong),
                 "--backend", "scipy", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["match"] is False and report["missing"] == [5, 6] and report["extra"] == [287]
    assert report["backend"] == "scipy" and report["threads"] == 1 and report["categories"] == 19


def test_generate_then_run_equals_run_generated(tmp_path: Path, capsys) -> None:
    assert main(["challenge", "generate", "--neurons", "256", "--layers", "9", "--seed", "4",
                 "--out", str(tmp_path)]) == 0
    files = sorted((tmp_path / "neuron256").iterdir())
    assert len(files) == 9
    assert (read_weights(tmp_path / "neuron256" / "n256-l8.tsv", 256).astype(bool)
            != generate_layers(256, 8, seed=4)[7]).nnz == 0
    rng = np.random.default_rng(0)
    rows = [(i + 1, c + 1) for i in range(40) for c in np.flatnonzero(rng.random(256) < i / 100)]
    inputs = tmp_path / "sparse-images-256.tsv"
    inputs.write_text("".join(f"{r}\t{c}\t1\n" for r, c in rows))
    capsys.readouterr()
    common = ["--neurons", "256", "--layers", "9", "--inputs", str(inputs), "--bias", "-0.3", "--json"]
    assert main(["challenge", "run", "--data-dir", str(tmp_path), *common,
                 "--write-categories", str(tmp_path / "cats.tsv")]) == 0
    from_files = json.loads(capsys.readouterr().out)
    assert main(["challenge", "run", "--generate", "--seed", "4", *common]) == 0
    generated = json.loads(capsys.readouterr().out)
    assert 0 < from_files["categories"] < 40
    assert from_files["categories"] == generated["categories"] == read_truth(tmp_path / "cats.tsv").size
    assert "truth" not in generated


def test_run_refuses_bad_requests(tmp_path: Path, capsys) -> None:
    assert main(["challenge", "run", "--neurons", "1000", "--layers", "4", "--generate",
                 "--inputs", "x.tsv"]) == 2
    assert "no official bias for 1000 neurons" in capsys.readouterr().err
    assert main(["challenge", "run", "--neurons", "1024", "--layers", "3", "--data-dir", str(tmp_path)]) == 2
    assert "no folder neuron1024/" in capsys.readouterr().err
    assert main(["challenge", "run", "--neurons", "1024", "--layers", "3", "--generate",
                 "--data-dir", str(tmp_path)]) == 2
    assert "give --inputs FILE, or --inputs mnist" in capsys.readouterr().err
    assert main(["challenge", "run", "--neurons", "1024", "--layers", "3", "--generate", "--backend", "scipy",
                 "--threads", "2", "--inputs", "x.tsv"]) == 2
    assert "single-threaded" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["challenge", "run", "--neurons", "0", "--layers", "3"])
    assert main(["challenge", "generate", "--neurons", "1000", "--layers", "2", "--out", str(tmp_path / "g")]) == 2
    assert not (tmp_path / "g").exists()


def test_inputs_regenerated_from_mnist(official: Path, data_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sparse-images-1024.tsv"
    code = main(["challenge", "inputs", "--data-dir", str(data_root), "--count", "1200", "--out", str(out),
                 "--compare", str(official / "sparse-images-1024-first1200.tsv.gz")])
    text = capsys.readouterr().out
    assert code == 0
    mat = read_inputs(out, 1024)
    assert mat.shape == (1200, 1024) and np.all(mat.data == 1)
    assert f"wrote 1,200 inputs, {mat.nnz:,} nonzeros" in text
    assert "pixels differ over inputs 1..1200" in text
