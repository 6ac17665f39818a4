"""``sparsetopo topology radix | random | show`` through the CLI entry point."""

from __future__ import annotations

import json

import pytest

from sparsetopo.cli import main
from sparsetopo.topology import load_topology, radix_net, save_topology

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_radix_json_matches_the_library(capsys):
    assert main(["topology", "radix", "--systems", "10x10", "--kron", "8x3x1", "--trim", "16", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert [row["shape"] for row in rep["layers"]] == [[784, 300], [300, 100]]
    assert [row["nnz"] for row in rep["layers"]] == [23520, 3000]
    assert rep["paths"] == {"min": 3, "max": 3, "symmetric": True, "path_connected": True}
    assert rep["meta"]["systems"] == [[10, 10]]


def test_radix_table_several_systems(capsys):
    assert main(["topology", "radix", "--systems", "2x2x2", "--systems", "2x2x2"]) == 0
    out = capsys.readouterr().out
    assert "8x8" in out and "min 8, max 8 (symmetric); path-connected: yes" in out
    assert len([line for line in out.splitlines() if line.startswith(("0 ", "5 "))]) == 2


def test_random_save_show_and_plot(tmp_path, capsys):
    saved, pic = tmp_path / "r.npz", tmp_path / "r.png"
    args = ["topology", "random", "--sizes", "784,300,100", "--density", "0.1,0.2", "--seed", "3",
            "--mode", "exact", "--save", str(saved), "--plot", str(pic)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "23,520" in table and "6,000" in table and f"saved {saved}" in table
    assert pic.read_bytes().startswith(PNG_MAGIC)
    topo = load_topology(saved)
    assert topo.nnz == [23520, 6000] and topo.meta["seed"] == 3
    assert main(["topology", "show", str(saved), "--json", "--paths", "no"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert "paths" not in rep and rep["total_nnz"] == 29520


def test_paths_auto_skips_huge_nets(capsys):
    assert main(["topology", "radix", "--systems", "x".join(["2"] * 16), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert "paths" not in rep and "--paths yes" in rep["paths_skipped"]
    assert [row["out_degree"] for row in rep["layers"]] == [[2, 2]] * 16


def test_small_radix_plot_beside_its_random_equivalent(tmp_path, capsys):
    pic = tmp_path / "fig5.png"
    assert main(["topology", "radix", "--systems", "2x2x2", "--plot", str(pic), "--compare-seed", "4"]) == 0
    assert pic.read_bytes().startswith(PNG_MAGIC)
    saved = tmp_path / "big.npz"
    save_topology(radix_net((10, 10), (8, 30, 1), 16), saved)
    assert main(["topology", "show", str(saved), "--plot", str(tmp_path / "spy.png"), "--compare-seed", "1"]) == 0
    assert (tmp_path / "spy.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["topology", "radix", "--systems", "2xa"], "'2xa'"),
        (["topology", "radix", "--systems", "2x2", "--kron", "1x1"], "kron"),
        (["topology", "radix", "--systems", "2x2", "--trim", "9"], "trim_inputs=9"),
        (["topology", "radix", "--systems", "2x2", "--plot", "out.jpg"], "out.jpg"),
        (["topology", "random", "--sizes", "10,x", "--density", "0.1"], "'10,x'"),
        (["topology", "random", "--sizes", "10,10", "--density", "2"], "2.0"),
        (["topology", "random", "--sizes", "10,10", "--density", "0.5", "--seed", "-3"], "-3"),
        (["topology", "show", "missing.npz"], "missing.npz"),
        (["topology", "radix", "--systems", "2x2", "--compare-seed", "-1", "--save", "t.npz"], "-1"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparsetopo: error:") and words in err and "\n" not in err
    assert not list(tmp_path.iterdir())  # refused before writing anything
