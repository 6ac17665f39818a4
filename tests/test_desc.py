"""One run description: every spelling of a value names one run through the CLI, the API and the sweep,
and reads back the same in the report and the estimator; every value the CLI refuses, a sweep refuses
before any run starts; config files are strict; callback state is kept by name; the thread count is part
of a run's identity."""

from __future__ import annotations

import json
import math
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsetopo.cli import build_parser, main
from sparsetopo.desc.status import RunStatus
from sparsetopo.errors import ConfigError, UserError
from sparsetopo.experiments.estimate import _scale_k, budget_steps, cost_key
from sparsetopo.experiments.spec import load_experiment
from sparsetopo.report.data import Run, sparsity_of
from sparsetopo.runs import describe
from sparsetopo.training.commands import describe_args
from sparsetopo.training.hparams import TRAIN_GROUPS
from sparsetopo.training.loop import LoopState, load_checkpoint, save_checkpoint

DENSITIES = [Fraction(1, 2), Fraction(1, 10), Fraction(1, 20), Fraction(1, 100), Fraction(1, 3), Fraction(3, 10)]


def spellings(x: Fraction) -> st.SearchStrategy[str]:
    """Accepted ways to write the number ``x``."""
    return st.sampled_from(sorted({repr(float(x)), f"{x.numerator}/{x.denominator}", f"{float(x):.17e}",
                                   f"{2 * x.numerator}/{2 * x.denominator}"}))


@st.composite
def spec_pairs(draw: st.DrawFn) -> tuple[dict, dict, float]:
    """Two spellings of one valid training configuration, and its nominal sparsity."""
    kind = draw(st.sampled_from(["density", "neurons", "connections"]))
    epochs = draw(st.integers(1, 30))
    a: dict = {"epochs": epochs, "lr": 0.05}
    b: dict = {"epochs": float(epochs), "lr": draw(st.sampled_from([0.05, 5e-2, 1 / 20]))}
    if kind == "density":
        d = draw(st.sampled_from(DENSITIES))
        a["topology"] = f"random:density={draw(spellings(d))}"
        b["topology"] = f"random:density={draw(spellings(d))}"
        sparsity = 1 - float(d)
    elif kind == "neurons":
        d = draw(st.sampled_from(DENSITIES))
        a.update(topology="random", scale=f"neurons:{draw(spellings(d))}")
        b.update(topology="random", scale=f"neurons:{draw(spellings(d))}")
        sparsity = 1 - float(d)
    else:
        k = draw(st.integers(1, 50))
        a.update(topology="random", scale=f"connections:{k}")
        b.update(topology="random", scale=f"connections:{draw(st.sampled_from([str(k), f'{k}.0', f'{2 * k}/2']))}")
        sparsity = 1 - 1 / k
    return a, b, sparsity


def cli_id(params: dict) -> str:
    argv = ["train"] + [x for k, v in params.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    args = build_parser().parse_args(argv)
    return describe_args("train", TRAIN_GROUPS, args).run_id


def sweep_id(tmp_path: Path, params: dict) -> str:
    fixed = ", ".join(f"{k} = {json.dumps(v)}" for k, v in params.items() if k != "threads")
    path = tmp_path / "one.toml"
    path.write_text(f'[experiment]\nname = "one"\n[stages.only]\ncommand = "train"\nfixed = {{ {fixed} }}\n'
                    "[profiles.paper]\n")
    (spec,) = load_experiment(path, "paper", threads=params["threads"]).runs
    return spec.id


@settings(max_examples=40, deadline=None, derandomize=True)
@given(spec_pairs())
def test_every_spelling_names_one_run_everywhere_and_reads_back_the_same(tmp_path_factory, pair) -> None:
    a, b, sparsity = pair
    a, b = {**a, "threads": 1}, {**b, "threads": 1}
    tmp = tmp_path_factory.mktemp("spell")
    ids = {describe("train", a).run_id, describe("train", b).run_id, cli_id(a), cli_id(b),
           sweep_id(tmp, a), sweep_id(tmp, b)}
    assert len(ids) == 1, (a, b, ids)
    for params in (a, b):  # the report and the estimator read the value the run reads
        run = Run(id="x", command="train", params=params, status="completed", final=None, best=None, pruned=None,
                  steps=None, wall_seconds=None, cpu_seconds=None, summary={}, error=None)
        assert sparsity_of(run) == pytest.approx(sparsity, abs=1e-12)
        desc = describe("train", params)
        assert cost_key(desc) == cost_key(describe("train", a))
        assert budget_steps(desc) == 600 * a["epochs"]
        scale = desc.get("scale")
        if scale is not None:
            kind, value = _scale_k(cost_key(desc)[2])
            assert (kind, value) == (scale.kind, scale.value) and not math.isnan(value)


def test_report_reads_fractions_and_the_estimator_reads_fractional_scales() -> None:
    run = Run(id="x", command="train", params={"topology": "random:density=1/10"}, status="completed", final=None,
              best=None, pruned=None, steps=None, wall_seconds=None, cpu_seconds=None, summary={}, error=None)
    assert sparsity_of(run) == pytest.approx(0.9)  # the old report read 0.0
    assert run.get("topology") == "random:density=0.1"
    assert _scale_k("neurons:1/10") == ("neurons", 0.1)  # the old estimator read ('connections', 1.0)


# Values the CLI refuses, as (option, value, what the message says).
REFUSED = [
    ("topology", "ring", "unknown kind 'ring'"),
    ("topology", "random:density=0", "must be in (0, 1]"),
    ("topology", "random:density=2/0", "is not a number"),
    ("topology", "radix:systems=10x10,kron=8x3x1", "needs a 784x300"),
    ("init", "magic", "use sparse, dense, rewind"),
    ("init", "rewind:/nonexistent", "does not exist"),
    ("scale", "connections:0", "K must be an integer >= 1"),
    ("scale", "connections:2.5", "K must be an integer >= 1"),
    ("scale", "neuron:0.01", "use connections:K"),
    ("scale", "neurons:0", "F must be in (0, 1]"),
    ("lr", "inf", "must be a finite number"),
    ("lr", "nan", "must be a finite number"),
    ("lr", "-1", "must be > 0"),
    ("momentum", "-0.5", "must be >= 0"),
    ("widths", "300,x", "comma-separated positive integers"),
    ("validation", "60000", "hold out fewer"),
    ("optimizer", "sgdd", "'sgdd'"),
    ("threads", "0", "must be between 1 and 1024"),
    ("threads", "100000", "must be between 1 and 1024"),
]


@pytest.mark.parametrize("option, value, message", REFUSED)
def test_the_cli_and_a_sweep_refuse_the_same_values_before_any_work(tmp_path, capsys, option, value, message):
    out = tmp_path / "run"
    flag = f"--{option.replace('_', '-')}"
    try:
        code = main(["train", flag, value, "--steps", "5", "--quiet", "--out", str(out)])
    except SystemExit as exc:  # refused by the parser itself (a choice): usage and the error
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()  # nothing claimed
    number = value
    try:
        number = json.loads(value)
    except ValueError:
        pass
    if isinstance(number, float) and not math.isfinite(number) or value in ("inf", "nan"):
        toml_value = value  # TOML's own inf / nan
    else:
        toml_value = json.dumps(number)
    path = tmp_path / "exp.toml"
    path.write_text(f'[experiment]\nname = "bad"\n[fixed]\nsteps = 5\n{option} = {toml_value}\n'
                    '[stages.dense]\ncommand = "train"\n[profiles.paper]\n')
    with pytest.raises(ConfigError) as info:
        load_experiment(path, "paper")
    text = str(info.value)
    assert message in text
    assert text.count("experiment file") == 1 and text.count("stage 'dense'") == 1  # the prefix once


def test_a_run_written_as_a_string_in_a_sweep_is_refused_with_the_type(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('[experiment]\nname = "t"\n[fixed]\nlr = "0.5"\n[stages.dense]\ncommand = "train"\n'
                    "[profiles.paper]\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(path, "paper")
    assert str(info.value).count(f"experiment file {path}") == 1
    assert "lr = '0.5' must be of type float" in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("[trainig]\nlr = 0.05\n", "unknown section [trainig]; allowed sections: [data], [model], [training]"),
    ("[data]\nlr = 0.05\n", "[data] has no key 'lr'; its keys: augment, batch_size, data_seed, dataset, validation"),
    ("lr = 0.05\n[training]\nlr = 0.02\n", "lr is given twice (the top level and [training])"),
    ("learning_rate = 0.1\n", "unknown key 'learning_rate'"),
])
def test_config_files_refuse_unknown_sections_and_keys_given_twice(tmp_path, capsys, text, message):
    config = tmp_path / "run.toml"
    config.write_text(text)
    assert main(["train", "--config", str(config), "--steps", "5", "--quiet", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


class Recorder:
    """A stateful loop callback."""

    def __init__(self, name: str, state: dict | None = None) -> None:
        self.name, self.state = name, dict(state or {})

    def on_step_end(self, step, model, optimizer) -> None:
        pass

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = dict(state)


def test_callback_state_is_restored_by_name_whatever_else_changes(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "checkpoint.pt"
    stateless = Recorder("snapshots")
    save_checkpoint(path, model, opt, LoopState(step=7), [stateless, Recorder("gradual_pruning", {"history": [1, 2]})])
    fresh = Recorder("gradual_pruning")
    assert load_checkpoint(path, model, opt, [fresh]).step == 7  # the other callback is gone: nothing shifts
    assert fresh.state == {"history": [1, 2]}
    other = Recorder("schedule", {"x": 1})
    with pytest.raises(UserError, match="holds no state for 'schedule'"):
        load_checkpoint(path, model, opt, [other])


def test_the_thread_count_names_the_run_and_a_resume_at_another_count_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--steps", "20", "--eval-every", "10", "--threads", "1", "--quiet", "--out", str(out)]) == 0
    meta = json.loads((out / "hparams.json").read_text())
    assert meta["canonical"]["threads"] == 1
    capsys.readouterr()
    assert main(["train", "--steps", "20", "--eval-every", "10", "--threads", "2", "--quiet", "--out", str(out)]) == 2
    assert "threads: 1 there, 2 here" in capsys.readouterr().err
    assert describe("train", {"threads": 1}).run_id != describe("train", {"threads": 2}).run_id


def test_a_run_left_unnamed_takes_the_default_thread_count_into_its_name(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "run"
    assert main(["train", "--steps", "10", "--quiet", "--out", str(out)]) == 0
    meta = json.loads((out / "hparams.json").read_text())
    assert meta["canonical"]["threads"] == 1 and meta["run_id"] == describe("train", {"steps": 10, "threads": 1}).run_id


def test_statuses_are_one_enum():
    assert RunStatus("completed") is RunStatus.COMPLETED and RunStatus.COMPLETED == "completed"
    assert {s for s in RunStatus if s.finished} == {RunStatus.COMPLETED, RunStatus.DIVERGED}
    assert json.dumps({"status": RunStatus.DIVERGED}) == '{"status": "diverged"}'


SWEEP = """
[experiment]
name = "contract"
kind = "fig7"

[fixed]
steps = 20
eval_every = 10

[stages.dense]
command = "train"
axes = { seed = [0] }

[stages.oneshot]
command = "prune"
parent = "dense"
inherit = ["seed"]
fixed = { method = "oneshot", from_run = "{parent}" }
axes = { sparsity = [0.9] }

[stages.retrain]
command = "train"
parent = "oneshot"
fixed = { topology = "file:{parent}/topology.npz" }
axes = { seed = [5] }

[profiles.paper]
"""


def test_a_real_sweep_runs_the_api_and_a_moved_published_folder_reruns_nothing(tmp_path):
    """The sweep -> sparsetopo.runs.run contract with real training: run directories named by the run ids
    the API gives, parents named by id; the folder moved and stripped to its published files (no store, no
    checkpoints, no weights) runs nothing again and reports the same."""
    import shutil

    from sparsetopo.experiments.runner import run_sweep
    from sparsetopo.report import write_report

    path = tmp_path / "contract.toml"
    path.write_text(textwrap.dedent(SWEEP))
    exp = load_experiment(path, "paper")
    out = tmp_path / "sweep"
    result = run_sweep([exp], out, progress=False)
    assert (result.completed, result.failed, result.blocked) == (3, 0, 0)
    for spec in exp.runs:
        run_dir = out / "runs" / spec.id
        meta = json.loads((run_dir / "hparams.json").read_text())
        summary = json.loads((run_dir / "summary.json").read_text())
        assert meta["run_id"] == summary["run_id"] == spec.id == describe(spec.command, spec.params).run_id
        assert {k: v for k, v in meta["canonical"].items() if k != "command"} == spec.hparams
        assert summary["status"] == "completed" and summary["threads"] == 1
        assert str(tmp_path) not in json.dumps(meta["canonical"])  # no absolute path in the identity
    write_report(out, out / "report", ["contract"])
    before = {f.relative_to(out / "report"): f.read_bytes() for f in (out / "report").rglob("*") if f.is_file()}

    moved = tmp_path / "published"
    shutil.copytree(out, moved, ignore=shutil.ignore_patterns("checkpoint.pt", "weights-step*.pt", "results.db*",
                                                              ".lock", "report"))
    shutil.rmtree(out)
    again = run_sweep([exp], moved, progress=False)
    assert (again.skipped, again.completed) == (3, 0)
    write_report(moved, moved / "report", ["contract"])
    after = {f.relative_to(moved / "report"): f.read_bytes() for f in (moved / "report").rglob("*") if f.is_file()}
    assert after.keys() == before.keys() and after == before  # the same report, byte for byte


def test_a_new_stage_on_a_published_run_without_weights_restores_them(tmp_path):
    """A one-shot stage added to a published folder whose dense run kept no weights: the sweep trains the
    dense run again aside, moves only its weights in (the published files untouched), and the one-shot run
    and its retraining come out exactly as in a folder that never lost the weights."""
    import shutil

    from sparsetopo.experiments.runner import run_sweep

    full = tmp_path / "contract.toml"
    full.write_text(textwrap.dedent(SWEEP))
    dense_only = tmp_path / "dense.toml"
    dense_only.write_text(textwrap.dedent(SWEEP).split("[stages.oneshot]")[0] + "[profiles.paper]\n")
    exp = load_experiment(full, "paper")
    (dense_id,) = [s.id for s in exp.runs if s.stage == "dense"]

    reference = tmp_path / "reference"
    assert run_sweep([exp], reference, progress=False).completed == 3

    published = tmp_path / "published"
    assert run_sweep([load_experiment(dense_only, "paper")], published, progress=False).completed == 1
    dense_dir = published / "runs" / dense_id
    for weights in [dense_dir / "checkpoint.pt", *dense_dir.glob("weights-step*.pt")]:
        weights.unlink()
    kept = {p.name: p.read_bytes() for p in dense_dir.iterdir()}

    result = run_sweep([exp], published, progress=False)
    assert (result.skipped, result.completed, result.failed, result.blocked) == (1, 2, 0, 0)
    assert all(kept[name] == (dense_dir / name).read_bytes() for name in kept)  # published files as they were
    assert (dense_dir / "checkpoint.pt").exists() and not (published / "runs" / ".restore" / dense_id).exists()
    restored = json.loads((dense_dir / "restored.json").read_text())
    assert restored["same_metrics"] is True and "checkpoint.pt" in restored["restored"]
    assert restored["restored_final_test_accuracy"] == restored["published_final_test_accuracy"]
    for spec in exp.runs:
        if spec.stage != "dense":  # the one-shot run and its retraining, bit for bit
            a, b = reference / "runs" / spec.id, published / "runs" / spec.id
            assert (json.loads((a / "summary.json").read_text())["final_test_accuracy"]
                    == json.loads((b / "summary.json").read_text())["final_test_accuracy"])
            assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    shutil.rmtree(reference)
