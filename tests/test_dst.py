"""Dynamic sparse training (SET, RigL): constant nnz, regrown weights and optimiser state at zero, the
cosine schedule, RigL's choice against a hand-computed gradient, both backends alike, exact resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparsetopo.cli import main
from sparsetopo.nn import SparseLinear
from sparsetopo.topology import random_topology
from sparsetopo.training.dst import DynamicSparsity, drop_fraction


def small_model(backend: str = "masked", density: float = 0.3) -> nn.Module:
    torch.manual_seed(0)
    a = random_topology([12, 16], density, seed=1).layers[0]
    b = random_topology([16, 4], density, seed=2).layers[0]
    return nn.Sequential(SparseLinear(12, 16, a.T, backend=backend), nn.ReLU(), SparseLinear(16, 4, b.T, backend=backend))


def run_steps(model: nn.Module, dst: DynamicSparsity, opt: torch.optim.Optimizer, steps: int, start: int = 1) -> None:
    g = torch.Generator().manual_seed(5)
    for step in range(start, start + steps):
        x, y = torch.randn(32, 12, generator=g), torch.randint(0, 4, (32,), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        dst.on_step_end(step, model, opt)


@pytest.mark.parametrize("method", ["set", "rigl"])
@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_nnz_is_constant_and_grown_weights_start_at_zero_with_zero_optimiser_state(method, optim):
    model = small_model()
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optim == "sgd"
           else torch.optim.Adam(model.parameters(), lr=0.01))
    dst = DynamicSparsity(model, method, interval=5, fraction=0.5, end_step=30, seed=0)
    layers = [model[0], model[2]]
    nnz = [m.nnz for m in layers]
    run_steps(model, dst, opt, 4)
    before = [m.mask_dense().clone() for m in layers]
    run_steps(model, dst, opt, 1, start=5)  # the update step; then look at what grew
    for m, old, n in zip(layers, before, nnz):
        grown = m.mask_dense() & ~old
        assert m.nnz == n and grown.any()
        assert torch.all(m.weight.detach()[grown] == 0)
        for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
            if key in opt.state[m.weight]:
                assert torch.all(opt.state[m.weight][key][grown] == 0)
                assert torch.all(opt.state[m.weight][key][~m.mask_dense()] == 0)  # dropped: gone from the state
    run_steps(model, dst, opt, 40, start=6)
    assert [m.nnz for m in layers] == nnz and len(dst.history) == 6  # updates at 5, 10, ..., 30


def test_the_drop_fraction_follows_the_cosine_schedule():
    assert drop_fraction(0, 0.3, 100) == pytest.approx(0.3)
    assert drop_fraction(50, 0.3, 100) == pytest.approx(0.15)
    assert drop_fraction(100, 0.3, 100) == pytest.approx(0.0)
    assert drop_fraction(101, 0.3, 100) == 0.0
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dst = DynamicSparsity(model, "set", interval=10, fraction=0.4, end_step=40, seed=0)
    run_steps(model, dst, opt, 50)
    assert [r["step"] for r in dst.history] == [10, 20, 30, 40]
    for r in dst.history:
        f = 0.4 / 2 * (1 + math.cos(math.pi * r["step"] / 40))
        assert r["fraction"] == pytest.approx(f)
        n = model[0].nnz
        k = round(f * n)
        assert r["layers"]["0"]["changed"] <= k / n + 1e-9  # a just-dropped one may grow back


def test_rigl_grows_where_the_hand_computed_dense_gradient_is_largest():
    torch.manual_seed(3)
    mask = random_topology([6, 5], 0.4, seed=4).layers[0].T
    layer = SparseLinear(6, 5, mask, backend="sparse")
    model = nn.Sequential(layer)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay put: the choice is the test
    dst = DynamicSparsity(model, "rigl", interval=1, fraction=0.5, end_step=10, seed=0)
    x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
    active = layer.mask_dense().clone()
    values = layer.dense_weight().clone()
    w = layer.dense_weight().clone().requires_grad_(True)  # the gradient a dense layer would have
    nn.functional.cross_entropy(nn.functional.linear(x, w, layer.bias), y).backward()
    grad = w.grad.abs()
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    dst.on_step_end(1, model, opt)
    n = int(active.sum())
    k = round(drop_fraction(1, 0.5, 10) * n)
    magnitude = values.abs().reshape(-1)[active.reshape(-1)]
    keys = torch.nonzero(active.reshape(-1)).reshape(-1)
    dropped = keys[torch.tensor(np.lexsort((keys.numpy(), magnitude.numpy()))[:k])]
    after_drop = active.reshape(-1).clone()
    after_drop[dropped] = False
    scores = grad.reshape(-1).clone()
    scores[after_drop] = -1
    order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))[:k]
    expected = after_drop.clone()
    expected[torch.tensor(order)] = True
    assert torch.equal(layer.mask_dense().reshape(-1), expected)


def _train(out: Path, *extra: str) -> dict:
    assert main(["train", "--topology", "random:density=0.1", "--steps", "60", "--eval-every", "20", "--threads", "1",
                 "--dst-interval", "10", "--quiet", "--out", str(out), *extra]) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_the_same_run_on_both_backends_and_its_files(tmp_path, method):
    masked = _train(tmp_path / "m", "--dst", method, "--backend", "masked")
    sparse = _train(tmp_path / "s", "--dst", method, "--backend", "sparse")
    history = [json.loads((tmp_path / d / "connectivity.json").read_text()) for d in ("m", "s")]
    assert history[0] == history[1] and len(history[0]) == 4  # the same connections changed, step for step
    assert masked["final_test_accuracy"] == pytest.approx(sparse["final_test_accuracy"], abs=2e-3)
    assert [l["nnz"] for l in masked["layers"]] == [l["nnz"] for l in sparse["layers"]]
    assert masked["dst"]["updates"] == 4
    # the evolved structure retrains like a pruned one
    again = tmp_path / "retrain"
    assert main(["train", "--topology", f"file:{tmp_path / 'm'}/topology.npz", "--steps", "10", "--threads", "1",
                 "--quiet", "--out", str(again)]) == 0


def test_a_dynamic_run_resumes_exactly_across_an_update(tmp_path, killed_after):
    whole = _train(tmp_path / "whole", "--dst", "set", "--checkpoint-every", "5")
    cut = tmp_path / "cut"
    code = main(["train", "--topology", "random:density=0.1", "--steps", "60", "--eval-every", "20", "--threads",
                 "1", "--dst-interval", "10", "--dst", "set", "--checkpoint-every", "5", "--quiet", "--out", str(cut)])
    assert code == 0
    # simulate a kill after step 25 (an update at 20 done, the next at 30 to come): rewind the run to its
    # step-25 checkpoint by training a copy that stops there, then resume it to the end
    import shutil

    part = tmp_path / "part"
    shutil.copytree(cut, part)
    for name in ("summary.json",):
        (part / name).unlink()
    ckpt = torch.load(part / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 60
    stop = tmp_path / "stop"
    from conftest import Interrupted
    from sparsetopo.runs import run

    killed_after(25)
    with pytest.raises(Interrupted):
        run("train", {"topology": "random:density=0.1", "steps": 60, "eval_every": 20, "threads": 1,
                      "dst": "set", "dst_interval": 10, "checkpoint_every": 5}, stop)
    resumed = run("train", {"topology": "random:density=0.1", "steps": 60, "eval_every": 20, "threads": 1,
                            "dst": "set", "dst_interval": 10, "checkpoint_every": 5}, stop)
    assert resumed["final_test_accuracy"] == whole["final_test_accuracy"]
    assert (stop / "metrics.jsonl").read_text() == (tmp_path / "whole" / "metrics.jsonl").read_text()
    assert (stop / "connectivity.json").read_text() == (tmp_path / "whole" / "connectivity.json").read_text()


def test_dynamic_training_needs_a_sparse_topology(tmp_path, capsys):
    assert main(["train", "--dst", "set", "--steps", "5", "--quiet", "--out", str(tmp_path / "x")]) == 2
    assert "give a sparse --topology" in capsys.readouterr().err
    assert main(["prune", "--sparsity", "0.5", "--dst", "rigl", "--steps", "5", "--end", "4", "--begin", "1",
                 "--frequency", "1", "--quiet", "--out", str(tmp_path / "p")]) == 2


def test_rigl_from_an_erk_start_keeps_each_layers_erk_count(tmp_path):
    """RigL's usual start (ERK-distributed densities): every layer keeps exactly its ERK share of the
    connections through the updates, and the shares differ between layers as ERK says."""
    from sparsetopo.topology import load_topology

    out = tmp_path / "erk"
    assert main(["train", "--topology", "random:density=0.1,mode=exact,distribution=erk", "--dst", "rigl",
                 "--steps", "40", "--eval-every", "40", "--dst-interval", "10", "--threads", "1", "--quiet",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    fc1, fc2 = summary["layers"][0], summary["layers"][1]
    from sparsetopo.topology.randomnets import erk_densities

    d1, d2 = erk_densities([(300, 784), (100, 300)], 0.1)
    assert fc1["nnz"] == math.floor(d1 * 300 * 784 + 0.5) and fc2["nnz"] == math.floor(d2 * 100 * 300 + 0.5)
    assert fc2["density"] > 0.1 > fc1["density"]
    final = load_topology(out / "topology.npz")
    assert [int(m.nnz) for m in final.layers[:2]] == [fc1["nnz"], fc2["nnz"]]
    assert summary["dst"]["updates"] == 3
