"""Sparse topologies on any model: sparsify / densify, fitted RadiX-Nets, pruning in your own loop."""

from __future__ import annotations

import copy
import io
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sparsetopo
from sparsetopo.errors import ConfigError
from sparsetopo.nn import SparseConv2d, SparseLinear
from sparsetopo.topology.radix import radix_fit


class Residual(nn.Module):
    """A small CIFAR-style network of the user's own: convolutions, batch norm, a residual block."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.stem(x)))
        x = torch.relu(x + self.block(x))
        x = torch.relu(self.down(x))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 4), 1)
        return self.head(torch.relu(self.fc1(x)))


def batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("spec", ["random:density=0.25", "radix:density=0.25"])
def test_sparsify_a_users_model_and_train_it_on_both_backends(spec):
    torch.manual_seed(0)
    base = Residual()
    models = {}
    for backend in ("masked", "sparse"):
        model, report = sparsetopo.sparsify(copy.deepcopy(base), spec, backend=backend, init="keep")
        models[backend] = model
        # every Linear/Conv2d but the first (stem) and the last (head)
        assert [r.name for r in report] == ["block.0", "block.3", "down", "fc1"]
        for r in report:
            layer = model.get_submodule(r.name)
            assert isinstance(layer, SparseConv2d if r.kind == "conv" else SparseLinear)
            assert r.backend == backend and r.nnz == layer.nnz and tuple(layer.weight_shape) == r.shape
            assert r.density == pytest.approx(0.25, abs=0.03)
        assert isinstance(model.stem, nn.Conv2d) and isinstance(model.head, nn.Linear)
    x, y = batch()
    out = {b: m(x) for b, m in models.items()}
    assert torch.allclose(out["masked"], out["sparse"], atol=1e-5)
    for model in models.values():  # a few steps of training, both the same
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for _ in range(3):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert torch.allclose(models["masked"](x), models["sparse"](x), atol=1e-4)
    # the structure survives a state_dict round trip (into a model sparsified the same way) and deepcopy
    model = models["sparse"]
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    again, _ = sparsetopo.sparsify(Residual(), spec, backend="sparse")
    again.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    clone = copy.deepcopy(model)
    model.eval(), again.eval(), clone.eval()
    assert torch.equal(again(x), model(x)) and torch.equal(clone(x), model(x))


def test_sparsify_keeps_weights_masked_and_densify_gives_plain_modules_back():
    torch.manual_seed(0)
    plain = Residual()
    model, _ = sparsetopo.sparsify(copy.deepcopy(plain), "random:density=0.5", layers=["fc1"], init="keep")
    mask = model.fc1.mask_dense()
    assert torch.equal(model.fc1.dense_weight(), plain.fc1.weight.detach() * mask)
    dense = sparsetopo.densify(copy.deepcopy(model))
    assert type(dense.fc1) is nn.Linear and torch.equal(dense.fc1.weight, model.fc1.dense_weight())
    model.eval(), dense.eval()
    x, _ = batch()
    assert torch.allclose(dense(x), model(x), atol=1e-6)


def test_sparsify_takes_patterns_mappings_callables_and_topologies():
    model, report = sparsetopo.sparsify(Residual(), {"block.*": "random:density=0.5", "fc1": None})
    assert [r.name for r in report] == ["block.0", "block.3"]
    model, report = sparsetopo.sparsify(Residual(), lambda name, m: "random:density=0.1"
                                        if isinstance(m, nn.Linear) else None, layers=["*"])
    assert [r.name for r in report] == ["fc1", "head"]
    topo = sparsetopo.topology.random_topology([512, 64], 0.2, seed=3)
    model, report = sparsetopo.sparsify(Residual(), topo, layers=["fc1"])
    assert report[0].nnz == topo.layers[0].nnz
    with pytest.raises(ConfigError, match="layers pattern 'fc9' matches no nn.Linear or nn.Conv2d"):
        sparsetopo.sparsify(Residual(), "random:density=0.1", layers=["fc9"])
    with pytest.raises(ConfigError, match="the topology has 1 layers; 4 layers of the model are chosen"):
        sparsetopo.sparsify(Residual(), topo)
    with pytest.raises(ConfigError, match="grouped convolutions"):
        sparsetopo.sparsify(nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 4, 1)),
                            "random:density=0.5")


def test_a_layer_refused_late_leaves_the_whole_model_untouched():
    """The grouped convolution comes after a layer that could be sparsified: nothing is replaced, not the
    first half of the model, in sparsify or in the pruner."""
    def net() -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 2, 1))

    model = net()
    with pytest.raises(ConfigError, match="layer 2: grouped convolutions"):
        sparsetopo.sparsify(model, "random:density=0.5")
    assert all(type(m) is nn.Conv2d for m in model)
    model = net()
    with pytest.raises(ConfigError, match="layer 2: grouped convolutions"):
        sparsetopo.GradualPruner(model, 0.5, begin=0, end=10)
    assert all(type(m) is nn.Conv2d for m in model)


def test_weight_granularity_draws_single_kernel_weights():
    model, report = sparsetopo.sparsify(Residual(), "random:density=0.3", layers=["down"], granularity="weight")
    mask = model.down.mask_dense()
    per_pair = mask.reshape(32, 16, 9).sum(-1)
    assert ((per_pair > 0) & (per_pair < 9)).any()  # kernels kept in part, which channel masks never do
    assert report[0].density == pytest.approx(0.3, abs=0.05)


def test_an_erk_spec_spreads_its_density_over_the_layers_it_is_given():
    model, report = sparsetopo.sparsify(Residual(), "random:density=0.2,mode=exact,distribution=erk")
    by = {r.name: r for r in report}
    assert set(by) == {"block.0", "block.3", "down", "fc1"}
    sizes = {r.name: int(np.prod(r.shape)) for r in report}
    assert sum(r.nnz for r in report) == pytest.approx(0.2 * sum(sizes.values()), rel=0.01)
    assert by["block.0"].density == pytest.approx(by["block.3"].density)  # the same shape, the same share
    score = {n: sum(r.shape) / np.prod(r.shape) for n, r in by.items()}  # ERK: density ~ sum(shape)/prod(shape)
    for name in ("block.0", "down"):  # (convolutions keep whole kernels, so their counts are rounded coarser)
        assert by[name].density / by["fc1"].density == pytest.approx(score[name] / score["fc1"], rel=0.03)
    x, y = batch()
    nn.functional.cross_entropy(model(x), y).backward()  # it trains as it is


def _paths(layers: list) -> np.ndarray:
    prod = layers[0].astype(np.int64)
    for m in layers[1:]:
        prod = prod @ m.astype(np.int64)
    return prod.toarray()


@pytest.mark.filterwarnings("ignore:radix density")  # many of these shapes cannot reach the density asked
@settings(max_examples=40, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(8, 400), min_size=3, max_size=5), density=st.sampled_from([0.5, 0.25, 0.1, 0.05]))
def test_fitted_radix_nets_keep_every_input_connected_to_every_output(sizes, density):
    n_layers = len(sizes) - 1
    try:
        topo = radix_fit(sizes, density)
    except ConfigError as exc:  # only when even (2,)*L does not fit the smallest hidden layer
        assert min(sizes[1:-1]) < 2 ** n_layers and "no RadiX-Net fits" in str(exc)
        return
    (system,) = topo.meta["systems"]
    n, n_prime = system[0], int(np.prod(system))
    assert [m.shape for m in topo.layers] == [(sizes[i], sizes[i + 1]) for i in range(n_layers)]
    assert n_prime <= min(sizes[1:-1])  # a full block of every hidden layer is kept
    assert (_paths(topo.layers) > 0).all()  # every input reaches every output
    expected = max(2, round(density ** (-1 / (n_layers - 1))))  # the rule: nearest n, lowered only to fit
    while expected > 2 and expected ** n_layers > min(sizes[1:-1]):
        expected -= 1
    assert system == [expected] * n_layers
    for m in topo.layers:  # each row connects to n of every N' outputs it has in full
        full = (m.shape[1] // n_prime) * n_prime
        if full:
            assert (np.diff(m[:, :full].tocsr().indptr) == n * (full // n_prime)).all()


def test_the_paper_radix_net_is_what_density_one_tenth_fits_for_lenet300():
    topo = radix_fit([784, 300, 100], 0.1)
    assert topo.meta["systems"] == [[10, 10]] and topo.meta["kron"] == [8, 3, 1]
    assert topo.density == [0.1, 0.1]
    model, report = sparsetopo.sparsify(nn.Sequential(nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)),
                                        "radix:density=0.1", layers=["0", "1"])
    assert [r.nnz for r in report] == [23_520, 3_000]


def test_a_fitted_radix_net_far_from_the_density_asked_warns_with_the_density_it_has():
    # 784-300-100 at 1%: n = 100 would need N' = 10,000 hidden units; the largest system that fits the 300 is
    # (17, 17), density 17/289 per layer, and the user is told so rather than left to read the nnz
    with pytest.warns(UserWarning, match=r"radix density 0\.01 on layer sizes \[784, 300, 100\].*0\.0591, 0\.0589"
                      r".*\(17, 17\) needs N' = 289 .* smallest has 300"):
        topo = radix_fit([784, 300, 100], 0.01)
    assert topo.meta["systems"] == [[17, 17]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        radix_fit([784, 300, 100], 0.1)  # the paper's RadiX-Net: exactly the density asked, no warning


def _loop(model: nn.Module, pruner, opt, steps: int) -> None:
    x, y = torch.randn(16, 20), torch.randint(0, 5, (16,))
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step()


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_gradual_pruner_in_a_hand_written_loop_reaches_exact_counts_and_removed_weights_stay_zero(optim):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 5))
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optim == "sgd"
           else torch.optim.Adam(model.parameters(), lr=0.01))
    pruner = sparsetopo.GradualPruner(model, 0.9, begin=5, end=25, frequency=5, optimizer=opt)  # after the optimiser
    _loop(model, pruner, opt, 40)
    for name, layer in pruner.layers.items():
        n = layer.weight.numel()
        assert int((~layer.mask_dense()).sum()) == round(0.9 * n), name
        assert torch.count_nonzero(layer.dense_weight()) <= n - round(0.9 * n)
        assert torch.all(layer.weight.detach()[~layer.mask_dense()] == 0)  # zero under momentum / Adam
        state = opt.state[layer.weight]
        for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
            if key in state:
                assert torch.all(state[key][~layer.mask_dense()] == 0), key
        assert any(p is layer.weight for g in opt.param_groups for p in g["params"])  # still trained
    # saved and restored: rebuild, make the pruner, restore its masks, then the weights
    saved = {"model": copy.deepcopy(model.state_dict()), "pruner": pruner.state_dict()}
    again = nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 5))
    restored = sparsetopo.GradualPruner(again, 0.9, begin=5, end=25, frequency=5)
    restored.load_state_dict(saved["pruner"])
    again.load_state_dict(saved["model"])
    x = torch.randn(3, 20)
    assert torch.equal(again(x), model(x)) and restored.steps == 40 and restored.sparsity == pruner.sparsity


def test_oneshot_prune_layerwise_and_global():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 30))
    before = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    sparsity = sparsetopo.oneshot_prune(model, 0.75)
    assert sparsity == {"0": 0.75, "2": 0.75}
    kept = model[0].dense_weight()
    assert torch.equal(kept[kept != 0], before[0][kept != 0])  # the kept weights are unchanged
    model = nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 30))
    with torch.no_grad():
        model[2].weight.mul_(100)  # one layer's weights much larger: a global threshold spares it
    sparsity = sparsetopo.oneshot_prune(model, 0.5, scope="global")
    assert sparsity == {"0": 1.0, "2": pytest.approx(200 / 1200)}  # 1000 of 2000: all 800 small ones, 200 more
    with pytest.raises(ConfigError, match="scope 'all' is not allowed"):
        sparsetopo.oneshot_prune(model, 0.5, scope="all")


def test_the_own_model_page_runs_as_written(tmp_path, monkeypatch):
    """docs/own-model.md's example, executed as the page shows it."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "own-model.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, "docs/own-model.md", "exec"), namespace)


TESTS = Path(__file__).resolve().parent


def test_a_cli_run_and_a_sweep_with_a_users_model_factory(tmp_path, monkeypatch, capsys):
    import json
    import textwrap

    from sparsetopo.cli import main
    from sparsetopo.experiments.runner import run_sweep
    from sparsetopo.experiments.spec import load_experiment
    from sparsetopo.runs import describe

    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    out = tmp_path / "cli"
    common = ["--model", "own_models:mlp", "--topology", "random:density=0.5", "--steps", "20", "--eval-every", "20",
              "--threads", "1", "--quiet", "--out", str(out)]
    assert main(["train", *common, "--model-args", '{"hidden": 32}']) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [layer["name"] for layer in summary["layers"]] == ["1", "3", "5"]
    assert [layer["sparse"] for layer in summary["layers"]] == [False, True, False]  # the hidden layer only
    # the factory and its arguments name the run, in any spelling
    meta = json.loads((out / "hparams.json").read_text())
    assert meta["canonical"]["model"] == "own_models:mlp" and meta["canonical"]["model_args"] == '{"hidden":32}'
    assert main(["train", *common, "--model-args", "hidden = 32"]) == 0  # the same run: finished already
    capsys.readouterr()
    assert main(["train", *common, "--model-args", "hidden = 16"]) == 2
    assert "holds a different run" in capsys.readouterr().err
    for bad, message in (("own_models:not_a_model", "not an nn.Module"), ("own_models:nope", "cannot load the factory"),
                         ("resnet99", "choose one of lenet300, lenet5, resnet20")):
        assert main(["train", "--model", bad, "--steps", "3", "--quiet", "--out", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "bad").exists()
    # a spec's density and a --scale that disagree, or a scale beside a topology with its own densities
    for topology, scale, message in (
            ("random:density=0.5", "neurons:0.1", "has density 0.5 but --scale neurons:0.1 implies 0.1"),
            ("radix:density=0.5", "neurons:1/4", "has density 0.5 but --scale neurons:0.25 implies 0.25"),
            ("radix:systems=4x4,kron=2x2x1", "neurons:0.5", "brings its own densities")):
        assert main(["train", "--model", "own_models:mlp", "--topology", topology, "--scale", scale, "--steps", "3",
                     "--quiet", "--out", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "bad").exists()
    path = tmp_path / "own.toml"
    path.write_text(textwrap.dedent("""
        [experiment]
        name = "own"
        [fixed]
        model = "own_models:mlp"
        model_args = "hidden = 16"
        steps = 10
        eval_every = 10
        [stages.dense]
        command = "train"
        axes = { topology = ["dense", "random:density=0.5"] }
        [profiles.paper]
    """))
    exp = load_experiment(path, "paper")
    result = run_sweep([exp], tmp_path / "sweep", progress=False)
    assert (result.completed, result.failed) == (2, 0)
    for spec in exp.runs:
        assert describe(spec.command, spec.params).run_id == spec.id
        assert (tmp_path / "sweep" / "runs" / spec.id / "summary.json").exists()


def test_a_users_dataset_factory_trains_with_a_users_model(tmp_path, monkeypatch, capsys):
    import json

    from sparsetopo.cli import main

    monkeypatch.syspath_prepend(str(TESTS))
    out = tmp_path / "blobs"
    assert main(["train", "--dataset", "own_models:blobs", "--model", "own_models:mlp", "--model-args", "hidden = 16",
                 "--topology", "random:density=0.5", "--epochs", "5", "--batch-size", "20", "--threads", "1",
                 "--validation", "40", "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5 * (360 // 20) and summary["final_test_accuracy"] > 0.8  # separable blobs
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "val_accuracy" in metrics[-1]
    assert json.loads((out / "hparams.json").read_text())["canonical"]["dataset"] == "own_models:blobs"
    assert main(["train", "--dataset", "own_models:mlp", "--steps", "2", "--quiet", "--out", str(tmp_path / "x")]) == 2
    assert "--dataset own_models:mlp" in capsys.readouterr().err


def test_prune_gradually_and_at_once_a_users_model_then_retrain_its_structure(tmp_path, monkeypatch):
    """``prune`` takes a model factory like ``train``: gradual pruning to exact per-layer counts, one-shot
    pruning of a finished run, and the pruned structure retrained as ``file:`` with its rewound weights."""
    import json

    from sparsetopo.cli import main
    from sparsetopo.topology import load_topology

    monkeypatch.syspath_prepend(str(TESTS))
    own = ["--dataset", "own_models:blobs", "--model", "own_models:cnn", "--batch-size", "20", "--threads", "1",
           "--quiet"]
    shapes = {"0.0": (8, 1, 3, 3), "0.2": (8, 8, 3, 3), "2": (4, 128)}
    assert main(["prune", *own, "--method", "gradual", "--sparsity", "0.75", "--begin", "0", "--end", "40",
                 "--frequency", "10", "--steps", "60", "--out", str(tmp_path / "gradual")]) == 0
    summary = json.loads((tmp_path / "gradual" / "summary.json").read_text())
    assert summary["pruned_layers"] == list(shapes)
    for name, shape in shapes.items():  # every layer at exactly a quarter of its weights
        assert summary["layer_sparsity"][name] == pytest.approx(1 - round(0.25 * np.prod(shape)) / np.prod(shape))
    topo = load_topology(tmp_path / "gradual" / "topology.npz")
    assert topo.names == list(shapes) and topo.kernel_masks[1].shape == shapes["0.2"]

    assert main(["train", *own, "--steps", "40", "--snapshot-steps", "0", "--out", str(tmp_path / "dense")]) == 0
    assert main(["prune", "--method", "oneshot", "--from", str(tmp_path / "dense"), "--sparsity", "0.5",
                 "--threads", "1", "--quiet", "--out", str(tmp_path / "oneshot")]) == 0
    oneshot = json.loads((tmp_path / "oneshot" / "summary.json").read_text())
    assert oneshot["layer_sparsity"]["0.2"] == pytest.approx(0.5, abs=1 / 576)
    assert oneshot["dense_test_accuracy"] >= oneshot["pruned_test_accuracy"] - 0.05  # pruning half costs little here

    assert main(["train", *own, "--steps", "20", "--topology", f"file:{tmp_path / 'oneshot' / 'topology.npz'}",
                 "--init", f"rewind:{tmp_path / 'oneshot'}", "--out", str(tmp_path / "retrain")]) == 0
    retrain = json.loads((tmp_path / "retrain" / "summary.json").read_text())
    assert {layer["name"]: layer["nnz"] for layer in retrain["layers"]} == {
        layer["name"]: layer["nnz"] for layer in oneshot["layers"]}
