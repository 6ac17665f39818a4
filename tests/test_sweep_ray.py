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


REAL = """
[experiment]
name = "cluster"
kind = "table"

[fixed]
steps = 5
eval_every = 5

[stages.dense]
command = "train"
axes = { seed = [0, 1] }

[profiles.paper]
"""


def test_a_sweep_on_a_separate_cluster_gives_every_worker_the_drivers_data_root(tmp_path):
    """`ray start --head` in its own process (started without $SPARSETOPO_DATA, offline): the sweep's runs
    train on the driver's data root, because the driver passes the root it resolved to every task."""
    import socket
    import subprocess
    import sys

    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip("the ray command is not installed beside this Python")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = Path(os.environ.get("SPARSETOPO_DATA", "../shared/data")).resolve()
    home = tmp_path / "home"
    home.mkdir()
    cluster_env = {k: v for k, v in os.environ.items() if k != "SPARSETOPO_DATA"}
    cluster_env.update(HOME=str(home), SPARSETOPO_MIRROR="http://127.0.0.1:9/", RAY_USAGE_STATS_ENABLED="0",
                       RAY_AUTH_MODE="disabled")
    import tempfile

    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
    started = subprocess.run([str(ray_bin), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                              "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}"],
                             env=cluster_env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        path = tmp_path / "cluster.toml"
        path.write_text(textwrap.dedent(REAL))
        out = tmp_path / "out"
        driver_env = {**os.environ, "SPARSETOPO_DATA": str(data), "RAY_AUTH_MODE": "disabled"}
        done = subprocess.run([sys.executable, "-m", "sparsetopo", "sweep", str(path), "--profile", "paper",
                               "--backend", "ray", "--ray-address", f"127.0.0.1:{port}", "--out", str(out)],
                              env=driver_env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        with ResultsStore(out) as store:
            assert {r["status"] for r in store.runs()} == {"completed"} and store.count() == 2
        assert not (home / ".cache" / "sparsetopo" / "data").exists()  # no worker tried to download
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], env=cluster_env, capture_output=True, timeout=120)
        import shutil

        shutil.rmtree(temp, ignore_errors=True)
