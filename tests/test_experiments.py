"""Experiment files: grid expansion, profiles, dependencies, run ids, and the shipped files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sparsetopo.desc.hparams import hp
from sparsetopo.desc.identity import RunDesc
from sparsetopo.errors import ConfigError
from sparsetopo.experiments.spec import find_experiment_file, load_experiment, order_runs, shipped_names
from sparsetopo.runs import describe

GRID = """
[experiment]
name = "grid"
kind = "fig7"
default_profile = "smoke"

[fixed]
dataset = "mnist"
steps = 100

[stages.dense]
command = "train"
axes = { model = ["lenet300", "lenet5"], seed = [0, 1] }

[stages.oneshot]
command = "prune"
parent = "dense"
inherit = ["model", "seed"]
fixed = { method = "oneshot", from_run = "{parent}" }
axes = { sparsity = [0.5, 0.9] }

[stages.retrain]
command = "train"
parent = "oneshot"
inherit = ["model"]
fixed = { topology = "file:{parent}/topology.npz" }
axes = { seed = [7] }

[profiles.paper]

[profiles.smoke]
fixed = { steps = 10 }
stages.dense.axes.seed = [0]
"""


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_expands_axes_in_order_with_profile_overlay(tmp_path):
    path = write(tmp_path, GRID)
    paper = load_experiment(path, "paper")
    smoke = load_experiment(path)  # the file's default profile
    assert smoke.profile == "smoke"
    # paper: 2 models x 2 seeds dense, x 2 sparsities one-shot, x 1 retrain seed
    assert [s for s, _ in paper.memberships].count("dense") == 4
    assert [s for s, _ in paper.memberships].count("oneshot") == 8
    assert [s for s, _ in paper.memberships].count("retrain") == 8
    assert len(smoke.runs) == 2 + 4 + 4
    dense = [r for r in paper.runs if r.stage == "dense"]
    assert [(r.params["model"], r.params["seed"]) for r in dense] == [
        ("lenet300", 0), ("lenet300", 1), ("lenet5", 0), ("lenet5", 1)]
    assert all(r.params["steps"] == 10 for r in smoke.runs)
    assert all(r.params["dataset"] == "mnist" for r in smoke.runs)


def test_dependencies_are_symbolic_run_references(tmp_path):
    exp = load_experiment(write(tmp_path, GRID), "paper")
    by_id = {r.id: r for r in exp.runs}
    for r in exp.runs:
        if r.stage == "oneshot":
            (dep,) = r.deps
            assert by_id[dep].stage == "dense"
            assert r.params["from_run"] == f"{{run:{dep}}}"
            assert r.params["model"] == by_id[dep].params["model"]  # inherited
            assert r.params["seed"] == by_id[dep].params["seed"]
        if r.stage == "retrain":
            (dep,) = r.deps
            assert by_id[dep].stage == "oneshot"
            assert r.params["topology"] == f"file:{{run:{dep}}}/topology.npz"
            assert r.params["seed"] == 7
    order = [r.id for r in order_runs(reversed(exp.runs))]
    for r in exp.runs:
        for dep in r.deps:
            assert order.index(dep) < order.index(r.id)
    # the id names the parent run by its id, never by a path
    assert exp.runs[-1].id == describe("train", exp.runs[-1].params).run_id


def rid(command: str, params: dict) -> str:
    return describe(command, params).run_id


def test_run_id_is_stable_and_ignores_defaults_and_operational_options():
    params = {"model": "lenet5", "lr": 0.1, "seed": 3, "steps": 300}
    base = rid("train", params)
    assert base == "train-b61e2b132d19"  # pinned: a change here renames every existing run
    assert rid("train", dict(reversed(list(params.items())))) == base
    assert rid("train", {"model": "lenet5", "seed": 3, "steps": 300}) == base  # lr 0.1 is the default
    assert rid("train", {**params, "batch_size": 100, "optimizer": "sgd", "topology": "dense"}) == base
    assert rid("train", {**params, "data_dir": "/data", "checkpoint_every": 50}) == base
    assert rid("train", {**params, "lr": 1}) == rid("train", {**params, "lr": 1.0})
    assert rid("train", {**params, "steps": 300.0}) == base
    assert rid("train", {**params, "lr": 0.2}) != base
    assert rid("train", {**params, "threads": 1}) != base  # the thread count changes the sums
    assert rid("prune", {**params, "sparsity": 0.5}) != base


def test_a_new_hyperparameter_with_a_default_does_not_rename_old_runs():
    from dataclasses import dataclass

    from sparsetopo.training.hparams import DataHparams, ModelHparams, TrainHparams

    @dataclass(frozen=True)
    class Newer(TrainHparams):
        label_smoothing: float = hp(0.0, "a hyperparameter added later")

    old = describe("train", {"model": "lenet5", "seed": 3, "steps": 300})
    dh, mh, th = old.group(DataHparams), old.group(ModelHparams), old.group(TrainHparams)
    kept = RunDesc("train", (dh, mh, Newer(**{**th.__dict__})))
    assert kept.run_id == old.run_id
    assert RunDesc("train", (dh, mh, Newer(**{**th.__dict__, "label_smoothing": 0.1}))).run_id != old.run_id


def test_defaults_follow_the_training_dataclasses():
    desc = describe("prune", {"sparsity": 0.9})
    assert desc.get("lr") == 0.1 and desc.get("batch_size") == 100 and desc.get("optimizer") == "sgd"
    assert (desc.get("begin"), desc.get("end"), desc.get("frequency")) == (2000, 5000, 200)


def test_same_run_in_two_stages_is_one_run(tmp_path):
    text = GRID.replace("[stages.retrain]", """[stages.again]
command = "train"
axes = { model = ["lenet300"], seed = [0] }

[stages.retrain]""")
    exp = load_experiment(write(tmp_path, text), "paper")
    again = exp.stage_runs("again")
    assert len(again) == 1 and again[0] in exp.stage_runs("dense")
    assert len({r.id for r in exp.runs}) == len(exp.runs)


@pytest.mark.parametrize("change, message", [
    (("stages.dense]\ncommand = \"train\"", "stages.dense]\ncommand = \"fit\""), "command 'fit' is not allowed"),
    (("seed = [0, 1] }", "seed = [0, 1], learning_rate = [0.1] }"), "unknown option(s) learning_rate"),
    (("parent = \"dense\"", "parent = \"nothing\""), "parent 'nothing' must be a stage declared above"),
    (("[profiles.paper]", "[profiles.paper]\nstages.typo.axes.seed = [1]"), "changes stage 'typo'"),
    (("axes = { sparsity = [0.5, 0.9] }", "axes = { sparsity = [] }"), "axis 'sparsity' is an empty list"),
    (("kind = \"fig7\"", "kind = \"fig10\""), "kind 'fig10' is not allowed"),
    (("steps = 100", "steps = 100\noptimizer = \"sgdd\""), "'sgdd' is not allowed; choose one of: sgd, adam"),
    (("axes = { sparsity = [0.5, 0.9] }", "axes = { sparsity = [0.5, 1.5] }"), "must be a fraction in [0, 1)"),
    (("steps = 100", "steps = 100\nepochs = 2"), "not both"),
    (("[fixed]", "[fixd]"), "unknown top-level key(s) fixd"),
    (("default_profile = \"smoke\"", "default_profile = \"smoke\"\ncontrasts = [[\"dense\", \"retrian\"]]"),
     "contrasts: unknown stage(s) retrian"),
    (("default_profile = \"smoke\"", "default_profile = \"smoke\"\ncontrasts = [\"dense\"]"),
     "contrasts must be a list of [stage, stage] pairs"),
])
def test_bad_files_are_refused_naming_the_problem(tmp_path, change, message):
    old, new = change
    assert old in GRID
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, GRID.replace(old, new)), "paper")
    assert message in str(err.value)


def test_unknown_profile_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="profile 'huge' is not declared; choose one of: paper, smoke"):
        load_experiment(write(tmp_path, GRID), "huge")
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_experiment(write(tmp_path, "[experiment\n"))
    with pytest.raises(ConfigError, match="shipped experiments: fig7, fig8, fig9"):
        find_experiment_file("fig10")


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_shipped_files_expand_under_every_profile(profile):
    names = shipped_names()
    assert names[:3] == ["fig7", "fig8", "fig9"]
    for name in names:
        exp = load_experiment(find_experiment_file(name), profile)
        assert exp.name == name and exp.runs
        for run in exp.runs:
            assert describe(run.command, run.params).run_id == run.id
            assert ("steps" in run.params) != ("epochs" in run.params)


def test_shipped_fig7_and_fig8_share_their_gradual_runs():
    for profile in ("smoke", "quick", "paper"):
        f7 = load_experiment(find_experiment_file("fig7"), profile)
        f8 = load_experiment(find_experiment_file("fig8"), profile)
        assert set(f8.stage_runs("gradual")) <= set(f7.stage_runs("gradual")), profile


def test_shipped_fig9_covers_the_papers_grid():
    exp = load_experiment(find_experiment_file("fig9"), "paper")
    seen = {(r.params["model"], r.params["dataset"], r.params.get("scale"), r.params["topology"].split(":")[0])
            for r in exp.runs}
    for model, dataset in (("lenet300", "mnist"), ("lenet5", "mnist"), ("lenet5", "cifar10")):
        assert (model, dataset, None, "dense") in seen
        for k in (2, 10, 100):
            assert (model, dataset, f"connections:{k}", "random") in seen
        for f in ("0.5", "0.1", "0.05", "0.01"):
            assert (model, dataset, f"neurons:{f}", "random") in seen
    assert ("lenet300", "mnist", "neurons:0.1", "radix") in seen
    assert ("lenet300", "mnist", "connections:10", "radix") in seen


def test_cost_estimates_fit_fixed_and_per_step_costs_and_interpolate_widths(tmp_path):
    from sparsetopo.experiments.estimate import cost_key, fallback, timings
    from sparsetopo.experiments.results import ResultsStore

    dense = {"model": "lenet5", "dataset": "mnist"}
    wide = {**dense, "topology": "random", "scale": "connections:10"}
    with ResultsStore(tmp_path) as store:
        for i, (params, steps, cpu) in enumerate([(dense, 100, 10.0), (dense, 400, 25.0), (wide, 100, 60.0)]):
            store.record_run(f"train-{i}", "train", {**params, "steps": steps}, "completed",
                             summary={"wall_seconds": 1.0}, cpu_seconds=cpu)
    def key(params: dict) -> tuple:
        return cost_key(describe("train", params))

    known = timings(tmp_path)
    assert known[key(dense)] == pytest.approx((5.0, 0.05, 0.0))  # 5 s per run + 0.05 s per step
    assert known[key(wide)] == pytest.approx((0.0, 0.6, 0.0))   # one length: cost per step
    four = fallback(key({**wide, "scale": "connections:4"}), known)
    assert four.step == pytest.approx(0.05 + (0.6 - 0.05) * 3 / 9)
    assert fallback(key({**wide, "scale": "neurons:0.1"}), known) == pytest.approx((5.0, 0.05, 0.0))
    assert fallback(key({**dense, "dataset": "cifar10"}), known) is None
    # CIFAR-10 measured dense only: widened as LeNet-5 widens on MNIST (x12 per step here)
    with ResultsStore(tmp_path) as store:
        store.record_run("train-c", "train", {**dense, "dataset": "cifar10", "steps": 100}, "completed",
                         summary={"wall_seconds": 1.0}, cpu_seconds=8.0)
    known = timings(tmp_path)
    wide_cifar = fallback(key({**wide, "dataset": "cifar10"}), known)
    assert wide_cifar.step == pytest.approx(0.08 * 0.6 / 0.05)


def test_cost_estimates_split_off_the_evaluations_runs_record(tmp_path):
    from sparsetopo.experiments.estimate import cost_key, evaluations, timings
    from sparsetopo.experiments.results import ResultsStore

    # 600 steps an epoch on MNIST: a 1,200-step run evaluates twice, a 300-step run once (at its end)
    runs = [({"steps": 1200}, 30.0, 4.0), ({"steps": 300}, 9.0, 2.0)]
    with ResultsStore(tmp_path) as store:
        for i, (params, cpu, eval_cpu) in enumerate(runs):
            store.record_run(f"train-{i}", "train", {"model": "lenet300", **params}, "completed",
                             summary={"wall_seconds": 1.0, "eval_cpu_seconds": eval_cpu}, cpu_seconds=cpu)
    desc = describe("train", {"model": "lenet300", "steps": 12000})
    assert evaluations(desc) == 20
    assert evaluations(describe("train", {"model": "lenet300", "steps": 1000, "eval_every": 300})) == 4
    cost = timings(tmp_path)[cost_key(desc)]
    # 2 s per evaluation; training alone: 26 s for 1,200 steps, 7 s for 300 -> 1 s + 1/45 s per step
    assert cost == pytest.approx((26 - 1200 * (19 / 900), 19 / 900, 2.0))
    assert cost.of(desc) == pytest.approx(cost.fixed + 12000 * 19 / 900 + 20 * 2.0)


def test_a_run_two_experiments_share_keeps_the_weight_snapshots_either_asks_for():
    from sparsetopo.experiments.runner import plan

    # ablation_init lists Fig. 7's gradual structures without snapshots; ablation_ticket rewinds to step 25
    # of the same runs (smoke profile), so whichever comes first, the shared run must save step 25
    init, ticket = (load_experiment(find_experiment_file(n), profile="smoke") for n in ("ablation_init", "ablation_ticket"))
    shared = {r.id for r in init.runs} & {r.id for r in ticket.runs if r.command == "prune"}
    assert shared
    for order in ((init, ticket), (ticket, init)):
        specs = {s.id: s for s in plan(order)}
        assert all(specs[rid].params["snapshot_steps"] == "25" for rid in shared)
    untouched = next(r for r in init.runs if r.id in shared)
    assert "snapshot_steps" not in untouched.params  # the experiment's own spec is left as it was


def test_two_stages_of_one_file_asking_for_the_same_run_keep_both_snapshot_steps(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text(textwrap.dedent("""
        [experiment]
        name = "e"
        [fixed]
        steps = 20
        [stages.a]
        command = "train"
        fixed = { snapshot_steps = "5" }
        [stages.b]
        command = "train"
        fixed = { snapshot_steps = "10,5" }
        [profiles.paper]
    """))
    exp = load_experiment(path, profile="paper")
    (run,) = exp.runs
    assert run.params["snapshot_steps"] == "5,10" and {s for s, _ in exp.memberships} == {"a", "b"}
