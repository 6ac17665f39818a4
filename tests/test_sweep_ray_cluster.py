"""A sweep against a Ray cluster started on its own with ``ray start --head`` (not ``ray.init()`` in the test
process): the driver's data root reaches every task."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("ray")

from sparsetopo.experiments.results import ResultsStore  # noqa: E402

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
