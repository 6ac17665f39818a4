"""The Ray backend on a local Ray instance: the same runs as Ray tasks; a lost worker resumes the run."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from sparsetopo.experiments.results import ResultsStore  # noqa: E402
from sparsetopo.experiments.runner import run_sweep  # noqa: E402
from sparsetopo.experiments.spec import load_experiment  # noqa: E402

TESTS = Path(__file__).resolve().parent

EXP = """
[experiment]
name = "mini"
kind = "fig7"

[fixed]
steps = 40

[stages.dense]
command = "train"
cases = [{ widths = "303,100" }, { widths = "300,100", lr = [0.1, 100.0] }]

[stages.oneshot]
command = "prune"
parent = "dense"
inherit = ["widths", "lr"]
fixed = { method = "oneshot", from_run = "{parent}" }
axes = { sparsity = [0.9] }

[profiles.paper]
"""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
    yield
    ray.shutdown()


def test_ray_backend_runs_the_sweep_and_a_lost_worker_resumes(tmp_path, local_ray, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    path = tmp_path / "exp.toml"
    path.write_text(textwrap.dedent(EXP))
    exp = load_experiment(path, "paper")
    out = tmp_path / "out"
    result = run_sweep([exp], out, backend="ray", run_fn="test_sweep_fakerun:run", progress=False, max_retries=2)
    # die-once dense + its one-shot, lr 0.1 dense + its one-shot complete; lr 100 diverges, its child is blocked
    assert (result.completed, result.diverged, result.blocked, result.failed) == (4, 1, 1, 0)
    with ResultsStore(out) as store:
        runs = {r["id"]: r for r in store.runs()}
        (died,) = [r for r in runs.values() if r["hparams"].get("widths") == "303,100" and r["command"] == "train"]
        assert died["summary"]["resumed_from_step"] == 20  # Ray retried the task; it resumed, not restarted
        assert all(len(store.metrics(rid)) >= 1 for rid, r in runs.items() if r["status"] != "blocked")
    again = run_sweep([exp], out, backend="ray", run_fn="test_sweep_fakerun:run", progress=False)
    assert again.skipped == 5 and again.completed == 0
    assert ray.is_initialized()  # a Ray instance the caller started is left running
    assert os.path.exists(out / "results.db")

