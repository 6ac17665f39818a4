"""Pruning: the cubic schedule, exact magnitude masks, gradual and one-shot runs, retraining on the result."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsetopo.cli import main
from sparsetopo.errors import ConfigError, UserError
from sparsetopo.nn import SparseConv2d, SparseLinear
from sparsetopo.pruning import GradualPruning, cubic_sparsity, magnitude_masks, pruned_count, pruning_steps
from sparsetopo.runs import run
from sparsetopo.topology import load_topology

# A short gradual run: dense to step 20, prune at 20, 40, 60, 80, masks fixed from 80 to 120.
GRADUAL = {"method": "gradual", "sparsity": 0.9, "begin": 20, "end": 80, "frequency": 20, "steps": 120,
           "eval_every": 60}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Small convolutions run much faster on one thread than on two contended ones: runs that set no thread
    count take $OMP_NUM_THREADS."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    if before is None:
        del os.environ["OMP_NUM_THREADS"]
    else:
        os.environ["OMP_NUM_THREADS"] = before


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def model_state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]


def layers_of(out: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each weight layer's (effective dense weight, bool mask) from a run's checkpoint, in either backend's layout."""
    state = model_state(out)
    layers = {}
    for key in state:
        name, _, leaf = key.rpartition(".")
        if leaf == "mask":
            layers[name] = (state[f"{name}.weight"] * state[key], state[key].bool())
        elif leaf == "weight_values":
            shape = tuple(int(v) for v in state[f"{name}.weight_shape_"])
            indptr, indices = state[f"{name}.weight_indptr"], state[f"{name}.weight_indices"].long()
            rows = torch.repeat_interleave(torch.arange(len(indptr) - 1), indptr.diff())
            weight = torch.zeros(shape[0], int(np.prod(shape[1:])))
            mask = torch.zeros(weight.shape, dtype=torch.bool)
            weight[rows, indices], mask[rows, indices] = state[key], True
            layers[name] = (weight.reshape(shape), mask.reshape(shape))
        elif leaf == "weight" and f"{name}.mask" not in state:
            layers[name] = (state[key], torch.ones(state[key].shape, dtype=torch.bool))
    return layers


def removed(mask: np.ndarray | torch.Tensor) -> int:
    return int((~np.asarray(mask, dtype=bool)).sum())


# ------------------------------------------------------------------------------------------ schedule

def test_cubic_sparsity_matches_hand_computed_values() -> None:
    s = lambda step, **kw: cubic_sparsity(step, 0.9, **kw)  # noqa: E731  (defaults 2000, 5000, 200)
    assert s(0) == s(1999) == s(2000) == s(2199) == 0.0
    assert s(2200) == pytest.approx(0.9 * (1 - (14 / 15) ** 3)) == pytest.approx(0.168266667)
    assert s(3500) == s(3400) == pytest.approx(0.9 * (1 - (8 / 15) ** 3))  # 3500 is not a pruning step
    assert s(3500, frequency=500) == s(3999, frequency=500) == pytest.approx(0.9 * (1 - 0.5**3)) == 0.7875
    assert s(4800) == pytest.approx(0.9 * (1 - (1 / 15) ** 3))
    assert s(5000) == s(12000) == 0.9
    # s_i > 0: the first pruning step already removes s_i
    assert s(1999, initial=0.5) == 0.0
    assert s(2000, initial=0.5) == 0.5
    assert s(3500, initial=0.5, frequency=500) == pytest.approx(0.9 - 0.4 * 0.125)
    # end - begin not a multiple of frequency: prune at 0, 4, 8 and at 10 (the target is always reached)
    assert pruning_steps(0, 10, 4) == [0, 4, 8, 10]
    assert cubic_sparsity(9, 0.9, begin=0, end=10, frequency=4) == pytest.approx(0.9 * (1 - 0.2**3))
    assert cubic_sparsity(10, 0.9, begin=0, end=10, frequency=4) == 0.9
    # begin == end: all at once
    assert cubic_sparsity(99, 0.5, begin=100, end=100) == 0.0
    assert cubic_sparsity(100, 0.5, begin=100, end=100) == 0.5
    assert len(pruning_steps()) == 16 and pruning_steps()[-1] == 5000


@pytest.mark.parametrize("kwargs", [{"final": 1.0}, {"final": -0.1}, {"final": 0.5, "initial": 0.6},
                                    {"final": 0.5, "begin": 10, "end": 5}, {"final": 0.5, "frequency": 0}])
def test_cubic_sparsity_refuses_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        cubic_sparsity(100, **kwargs)


# ------------------------------------------------------------------------------------------ masks

@settings(max_examples=60, deadline=None)
@given(sparsity=st.floats(0, 0.999), seed=st.integers(0, 10_000), levels=st.integers(1, 5),
       global_prune=st.booleans())
def test_magnitude_masks_remove_exactly_round_s_n_smallest(sparsity: float, seed: int, levels: int,
                                                          global_prune: bool) -> None:
    # few distinct magnitudes, so that most of the ranking is ties
    g = torch.Generator().manual_seed(seed)
    weights = {"a": torch.randint(-levels, levels + 1, (7, 13), generator=g).float(),
               "b": torch.randint(-levels, levels + 1, (5, 3, 2, 2), generator=g).float()}
    masks = magnitude_masks(weights, sparsity, global_prune=global_prune)
    again = magnitude_masks(weights, sparsity, global_prune=global_prune)
    assert all(torch.equal(masks[n], again[n]) for n in weights)
    if global_prune:
        assert sum(removed(m) for m in masks.values()) == round(sparsity * (91 + 60))
        kept = torch.cat([weights[n][masks[n]].abs() for n in weights])
        gone = torch.cat([weights[n][~masks[n]].abs() for n in weights])
    else:
        for n, w in weights.items():
            assert masks[n].shape == w.shape
            assert removed(masks[n]) == pruned_count(w.numel(), sparsity) == round(sparsity * w.numel())
        kept = weights["a"][masks["a"]].abs()
        gone = weights["a"][~masks["a"]].abs()
    if len(kept) and len(gone):
        assert gone.max() <= kept.min()


def test_ties_are_broken_by_position_and_removed_weights_stay_removed() -> None:
    w = torch.ones(2, 5)
    assert magnitude_masks({"w": w}, 0.3)["w"].reshape(-1).tolist() == [False] * 3 + [True] * 7
    # a removed weight stays removed even if its (stale) value is large; the count is still exact
    keep = torch.ones(2, 5, dtype=torch.bool)
    keep[1, 4] = False
    w = torch.arange(10.0).reshape(2, 5) + 100
    mask = magnitude_masks({"w": w}, 0.2, keep={"w": keep})["w"]
    assert not mask[1, 4] and not mask[0, 0] and removed(mask) == 2
    with pytest.raises(ConfigError, match="already lacks"):
        magnitude_masks({"w": w}, 0.0, keep={"w": keep})
    with pytest.raises(ConfigError):
        magnitude_masks({"w": w}, 1.0)


# ------------------------------------------------------------------------------------------ callback

def test_gradual_pruning_callback_exact_counts_and_zeros_under_momentum() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(SparseConv2d(2, 4, 3, np.ones((4, 2, 3, 3), bool), backend="masked"),
                                torch.nn.Flatten(),
                                SparseLinear(4 * 4 * 4, 5, np.ones((5, 64), bool), backend="masked"))
    layers = {"conv": model[0], "fc": model[2]}
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    cb = GradualPruning(layers, 0.8, begin=2, end=10, frequency=2)
    x, y = torch.randn(16, 2, 6, 6), torch.randint(0, 5, (16,))
    first_removed: dict[str, torch.Tensor] = {}
    for step in range(1, 25):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        cb.on_step_end(step, model, opt)
        for name, layer in layers.items():
            target = cubic_sparsity(step, 0.8, begin=2, end=10, frequency=2)
            assert removed(layer.mask_dense()) == round(target * layer.mask_dense().numel())
            gone = ~layer.mask_dense()
            assert torch.all(layer.weight[gone] == 0)
            buf = opt.state[layer.weight]["momentum_buffer"]
            assert torch.all(buf[gone] == 0)
            if step == 4:
                first_removed[name] = gone.clone()
            if step > 4:  # never revived
                assert torch.all(gone[first_removed[name]])
    assert [h["step"] for h in cb.history] == [2, 4, 6, 8, 10]
    assert cb.state_dict()["history"][-1]["sparsity"] == 0.8


def test_gradual_pruning_refuses_layers_it_cannot_prune() -> None:
    with pytest.raises(ConfigError, match="masked"):
        GradualPruning({"fc": torch.nn.Linear(3, 2)}, 0.5)
    layer = SparseLinear(3, 2, np.ones((2, 3), bool), backend="sparse")
    with pytest.raises(ConfigError, match="masked"):
        GradualPruning({"fc": layer}, 0.5)


# ------------------------------------------------------------------------------------------ runs

@pytest.fixture(scope="module")
def gradual_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gradual") / "run"
    run("prune", {**GRADUAL, "momentum": 0.9, "checkpoint_every": 30}, out)
    return out


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dense") / "run"
    run("train", {"steps": 100, "eval_every": 100, "snapshot_steps": "50"}, out)
    return out


def test_gradual_run_reaches_exact_layer_sparsity_and_writes_a_full_topology(gradual_run: Path) -> None:
    s = summary(gradual_run)
    assert s["status"] == "completed" and s["steps"] == 120 and s["method"] == "gradual"
    assert s["layer_sparsity"] == {"fc1": 0.9, "fc2": 0.9, "fc3": 0.9}
    assert [l["nnz"] for l in s["layers"]] == [23520, 3000, 100]
    assert s["pruned_test_accuracy"] == s["final_test_accuracy"] > 0.5
    assert [p["step"] for p in s["pruning_steps"]] == [20, 40, 60, 80]
    layers = layers_of(gradual_run)
    state = model_state(gradual_run)
    topo = load_topology(gradual_run / "topology.npz")
    assert topo.names == ["fc1", "fc2", "fc3"] and topo.meta["method"] == "gradual"
    for i, name in enumerate(topo.names):
        mask = layers[name][1]
        assert np.array_equal(topo.weight_mask(i), mask.numpy())
        assert torch.all(state[f"{name}.weight"][~mask] == 0)  # pruned weights stayed zero under momentum


def test_gradual_run_resumes_exactly_after_being_killed(gradual_run: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "killed"
    real = GradualPruning.on_step_end

    def dies_at_50(self: GradualPruning, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if step == 50:
            raise KeyboardInterrupt
        real(self, step, model, optimizer)

    monkeypatch.setattr(GradualPruning, "on_step_end", dies_at_50)
    with pytest.raises(KeyboardInterrupt):
        run("prune", {**GRADUAL, "momentum": 0.9, "checkpoint_every": 30}, out)
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 30  # pruned at 20, not yet at 40
    monkeypatch.setattr(GradualPruning, "on_step_end", real)
    s = run("prune", {**GRADUAL, "momentum": 0.9, "checkpoint_every": 30}, out)
    reference = summary(gradual_run)
    assert s["final_test_accuracy"] == reference["final_test_accuracy"]
    assert s["pruning_steps"] == reference["pruning_steps"]
    a, b = model_state(out), model_state(gradual_run)
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert load_topology(out / "topology.npz").layers[0].nnz == load_topology(gradual_run / "topology.npz").layers[0].nnz


def test_retraining_on_the_pruned_topology_keeps_its_structure(gradual_run: Path, tmp_path: Path) -> None:
    topo = load_topology(gradual_run / "topology.npz")
    for init in ("sparse", f"rewind:{gradual_run}"):
        out = tmp_path / init.split(":")[0]
        s = run("train", {"topology": f"file:{gradual_run}/topology.npz", "seed": 1, "init": init,
                          "steps": 30, "momentum": 0.9}, out)
        assert [l["nnz"] for l in s["layers"]] == [m.nnz for m in topo.layers]
        layers = layers_of(out)
        for i, name in enumerate(topo.names):
            assert np.array_equal(layers[name][1].numpy(), topo.weight_mask(i))
    # rewind: the retrained run starts from the pruned run's own step-0 weights, masked
    start = torch.load(tmp_path / "rewind" / "weights-step0.pt", weights_only=True)
    origin = torch.load(gradual_run / "weights-step0.pt", weights_only=True)
    for i, name in enumerate(topo.names):
        mask = torch.from_numpy(topo.weight_mask(i))
        assert start[f"{name}.weight_values"].numel() == int(mask.sum())  # nnz-sized, not dense
        assert torch.equal(snapshot_weight(start, name), snapshot_weight(origin, name) * mask)


def snapshot_weight(state: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """A snapshot layer (CSR: indptr, indices, values over the flattened weight) as its dense weight."""
    shape = tuple(state[f"{name}.weight_shape_"].tolist())
    indptr, indices = state[f"{name}.weight_indptr"], state[f"{name}.weight_indices"].long()
    rows = torch.repeat_interleave(torch.arange(len(indptr) - 1), indptr.diff())
    cols = int(np.prod(shape[1:]))
    dense = torch.zeros(shape[0] * cols)
    dense[rows * cols + indices] = state[f"{name}.weight_values"]
    return dense.reshape(shape)


def test_global_and_excluded_layers(tmp_path: Path) -> None:
    s = run("prune", {**GRADUAL, "steps": 80, "global_prune": True, "exclude": "fc3"}, tmp_path / "g")
    assert s["pruned_layers"] == ["fc1", "fc2"]
    nnz = {l["name"]: l["nnz"] for l in s["layers"]}
    assert (235200 - nnz["fc1"]) + (30000 - nnz["fc2"]) == round(0.9 * 265200)
    assert nnz["fc3"] == 1000 and "fc3" not in s["layer_sparsity"]
    topo = load_topology(tmp_path / "g" / "topology.npz")
    assert topo.names == ["fc1", "fc2", "fc3"] and topo.weight_mask(2).all()


def test_oneshot_prunes_the_smallest_final_weights_and_records_accuracy(dense_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "oneshot"
    s = run("prune", {"method": "oneshot", "from_run": str(dense_run), "sparsity": 0.95}, out)
    dense = summary(dense_run)
    assert s["status"] == "completed" and s["steps"] == 0
    assert s["dense_test_accuracy"] == dense["final_test_accuracy"]
    assert s["layer_sparsity"] == {"fc1": 0.95, "fc2": 0.95, "fc3": 0.95}
    assert s["pruned_test_accuracy"] == s["final_test_accuracy"] < s["dense_test_accuracy"]
    before, after = layers_of(dense_run), layers_of(out)
    for name in ("fc1", "fc2", "fc3"):
        w, (pruned, mask) = before[name][0], after[name]
        assert removed(mask) == round(0.95 * w.numel())
        assert torch.equal(pruned, w * mask)  # kept weights unchanged, no retraining
        assert w[~mask].abs().max() <= w[mask].abs().min()
    assert (out / "weights-step50.pt").exists()  # the dense run's snapshots, for --init rewind:ONESHOT@50
    # the dense run is named by its id, not its path; where it was is a hint relative to this run
    dense_id = json.loads((dense_run / "hparams.json").read_text())["run_id"]
    meta = json.loads((out / "hparams.json").read_text())
    assert meta["canonical"]["from_run"] == f"{{run:{dense_id}}}"
    assert (out / meta["refs"][dense_id]).resolve() == dense_run.resolve()
    # a second call returns the finished run
    assert run("prune", {"method": "oneshot", "from_run": str(dense_run), "sparsity": 0.95}, out) == s

    g = run("prune", {"method": "oneshot", "from_run": str(dense_run), "sparsity": 0.95, "global_prune": True},
            tmp_path / "global")
    assert sum(l["shape"][0] * l["shape"][1] - l["nnz"] for l in g["layers"]) == round(0.95 * 266200)


def test_lenet5_conv_layers_get_weight_level_masks_and_retrain(tmp_path: Path) -> None:
    params = {"model": "lenet5", "widths": "6,16,64", "sparsity": 0.75, "begin": 5, "end": 15, "frequency": 5,
              "steps": 20}
    s = run("prune", params, tmp_path / "p")
    for layer in s["layers"]:  # conv1 has 150 weights: round(112.5) = 112 removed
        n = int(np.prod(layer["shape"]))
        assert n - layer["nnz"] == round(0.75 * n) and s["layer_sparsity"][layer["name"]] == round(0.75 * n) / n
    topo = load_topology(tmp_path / "p" / "topology.npz")
    assert [None if k is None else k.shape for k in topo.kernel_masks] == [(6, 1, 5, 5), (16, 6, 5, 5), None, None]
    assert removed(topo.kernel_masks[1]) == round(0.75 * 16 * 6 * 25)
    r = run("train", {"model": "lenet5", "widths": "6,16,64", "topology": f"file:{tmp_path}/p/topology.npz",
                      "steps": 5, "seed": 3}, tmp_path / "r")
    assert [l["nnz"] for l in r["layers"]] == [l["nnz"] for l in s["layers"]]
    assert np.array_equal(layers_of(tmp_path / "r")["conv2"][1].numpy(), topo.kernel_masks[1])


# ------------------------------------------------------------------------------------------ refusals

@pytest.mark.parametrize("params, match", [
    ({"sparsity": 1.0}, "sparsity"),
    ({"sparsity": -0.1}, "sparsity"),
    ({}, "--sparsity is required"),
    ({"sparsity": 0.5, "begin": 50, "end": 40}, "begin"),
    ({"sparsity": 0.5, "frequency": 0}, "frequency"),
    ({"sparsity": 0.5, "initial_sparsity": 0.6}, "initial-sparsity"),
    ({"sparsity": 0.5, "steps": 100}, "past the training budget of 100 steps"),
    ({"sparsity": 0.5, "steps": 100, "end": 50, "begin": 10, "exclude": "fc9"}, "fc9 not a layer of lenet300"),
    ({"sparsity": 0.5, "steps": 100, "end": 50, "begin": 10, "exclude": "fc1,fc2,fc3"}, "leaves no layer"),
    ({"sparsity": 0.5, "steps": 100, "end": 50, "begin": 10, "topology": "random:density=0.5"}, "dense"),
    ({"sparsity": 0.5, "steps": 100, "end": 50, "begin": 10, "backend": "sparse"}, "masked"),
    ({"sparsity": 0.5, "from_run": "x"}, "oneshot"),
    ({"sparsity": 0.5, "method": "oneshot"}, "--from"),
    ({"sparsity": 0.5, "method": "pairwise"}, "gradual, oneshot"),
])
def test_bad_options_are_refused_before_any_work(params: dict, match: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=match):
        run("prune", params, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_oneshot_refuses_bad_sources(dense_run: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a run directory"):
        run("prune", {"method": "oneshot", "sparsity": 0.5, "from_run": str(tmp_path / "nope")}, tmp_path / "a")
    with pytest.raises(ConfigError, match="lenet5"):
        run("prune", {"method": "oneshot", "sparsity": 0.5, "from_run": str(dense_run), "model": "lenet5"},
            tmp_path / "b")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "hparams.json").write_text((dense_run / "hparams.json").read_text())
    with pytest.raises(UserError, match="has not finished"):
        run("prune", {"method": "oneshot", "sparsity": 0.5, "from_run": str(unfinished)}, tmp_path / "c")
    assert not any((tmp_path / n).exists() for n in "abc")


def test_cli_prune_oneshot_and_bad_input(dense_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    assert main(["prune", "--method", "oneshot", "--from", str(dense_run), "--sparsity", "0.9", "--global",
                 "--exclude", "fc3", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy before retraining" in printed and "topology.npz" in printed
    s = summary(out)
    assert s["global_prune"] is True and s["pruned_layers"] == ["fc1", "fc2"]
    assert main(["prune", "--sparsity", "1.5", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparsetopo: error: --sparsity: 1.5") and "\n" not in err
