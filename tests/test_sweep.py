"""The sweep runner and the results store, with a stand-in run function (tests/test_sweep_fakerun.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sparsetopo.experiments.results import ResultsStore
from sparsetopo.experiments.runner import run_sweep
from sparsetopo.experiments.spec import load_experiment

TESTS = Path(__file__).resolve().parent
FAKE = "test_sweep_fakerun:run"

EXP = """
[experiment]
name = "mini"
kind = "fig7"

[fixed]
steps = 40

[stages.dense]
command = "train"
axes = { lr = [0.1, 100.0], seed = [0, 1] }

[stages.oneshot]
command = "prune"
parent = "dense"
inherit = ["seed", "lr"]
fixed = { method = "oneshot", from_run = "{parent}" }
axes = { sparsity = [0.5, 0.9] }

[stages.retrain]
command = "train"
parent = "oneshot"
fixed = { topology = "file:{parent}/topology.npz" }
axes = { seed = [5] }

[profiles.paper]
"""


@pytest.fixture(autouse=True)
def fake_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


def experiment(tmp_path: Path, text: str = EXP):
    path = tmp_path / "exp.toml"
    path.write_text(textwrap.dedent(text))
    return path, load_experiment(path, "paper")


def calls(out: Path) -> list[str]:
    log = out / "calls.log"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def db_rows(out: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(out / "results.db") as conn:
        return conn.execute("SELECT id, status FROM runs ORDER BY id").fetchall()


def test_sweep_runs_dependencies_records_divergence_and_skips_completed(tmp_path):
    _, exp = experiment(tmp_path)
    out = tmp_path / "out"
    result = run_sweep([exp], out, jobs=2, run_fn=FAKE, progress=False)
    # lr 100 diverges: 2 dense runs diverge, their 4 one-shot children and those 4 retrains are blocked
    assert (result.total, result.completed, result.diverged, result.blocked, result.failed) == (20, 10, 2, 8, 0)
    status = dict(db_rows(out))
    assert len(status) == 20
    by_id = {r.id: r for r in exp.runs}
    for rid, st in status.items():
        root = by_id[rid]
        while root.deps:
            root = by_id[root.deps[0]]
        lr = root.params["lr"]
        assert st == ("completed" if lr < 100 else ("diverged" if by_id[rid].stage == "dense" else "blocked"))
    with ResultsStore(out) as store:
        diverged = [r for r in store.runs() if r["status"] == "diverged"]
        assert len(diverged) == 2 and diverged[0]["summary"]["status"] == "diverged"
        (row,) = store.metrics(diverged[0]["id"])
        assert row["train_loss"] is None and row["test_accuracy"] is not None  # NaN stored as NULL
        blocked = [r for r in store.runs() if r["status"] == "blocked"]
        assert all("diverged" in r["error"] or "blocked" in r["error"] for r in blocked)
        retrain = [r for r in store.runs() if r["status"] == "completed" and "topology" in r["hparams"]]
        assert retrain and all(len(store.metrics(r["id"])) == 4 for r in retrain)
    n_calls = len(calls(out))
    assert n_calls == 12  # each completed or diverged run was run once; blocked runs never started

    again = run_sweep([exp], out, jobs=2, run_fn=FAKE, progress=False)
    assert again.skipped == 12 and again.completed == 0 and again.blocked == 8
    assert len(calls(out)) == n_calls  # nothing done twice
    assert len(db_rows(out)) == 20


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    text = EXP.replace("axes = { lr = [0.1, 100.0], seed = [0, 1] }",
                       'cases = [{ widths = "301,100" }, { widths = "300,100" }]\naxes = { seed = [0] }')
    _, exp = experiment(tmp_path, text)
    out = tmp_path / "out"
    result = run_sweep([exp], out, jobs=2, run_fn=FAKE, progress=False)
    assert result.failed == 1 and result.completed == 1 + 2 + 2 and result.blocked == 4
    assert not result.ok
    with ResultsStore(out) as store:
        (failed,) = [r for r in store.runs() if r["status"] == "failed"]
        assert "RuntimeError: boom" in failed["error"]
    # re-running retries the failure (and its blocked children), not the completed runs
    before = calls(out)
    again = run_sweep([exp], out, jobs=2, run_fn=FAKE, progress=False)
    assert again.skipped == 5 and again.failed == 1
    assert calls(out)[len(before):] == [failed["id"]]
    with ResultsStore(out) as store:
        assert store.runs()[0]["attempts"] >= 1
        assert {r["id"]: r["attempts"] for r in store.runs()}[failed["id"]] == 2


def test_a_dead_worker_is_replaced_and_its_run_retried_then_failed(tmp_path):
    text = EXP.replace("axes = { lr = [0.1, 100.0], seed = [0, 1] }",
                       'cases = [{ widths = "302,100" }, { widths = "300,100" }]\naxes = { seed = [0] }')
    text = text.replace("axes = { sparsity = [0.5, 0.9] }", "axes = { sparsity = [0.5] }")
    _, exp = experiment(tmp_path, text)
    out = tmp_path / "out"
    result = run_sweep([exp], out, jobs=2, run_fn=FAKE, progress=False, max_retries=1)
    assert result.failed == 1 and result.completed == 3
    with ResultsStore(out) as store:
        (failed,) = [r for r in store.runs() if r["status"] == "failed"]
        assert "worker process running it died (2 times)" in failed["error"]
    # it died twice on its own (plus, maybe, once beside another run, which does not count against it)
    assert calls(out).count(failed["id"]) in (2, 3)


class _RecordingPool:
    def __init__(self) -> None:
        self.tasks: list[dict] = []

    def submit(self, fn, task):
        import concurrent.futures as cf
        self.tasks.append(task)
        return cf.Future()

    def shutdown(self, **kwargs) -> None:
        pass


class _BrokenPool(_RecordingPool):
    def submit(self, fn, task):
        from concurrent.futures.process import BrokenProcessPool
        raise BrokenProcessPool("a child process terminated abruptly")


def test_a_pool_broken_between_polls_does_not_lose_or_crash_a_submission():
    """A worker can die after the last poll and before the next submit: the submit must not raise."""
    import concurrent.futures as cf

    from sparsetopo.experiments.runner import LocalBackend
    backend = LocalBackend(jobs=2)
    backend.pool.shutdown()
    fresh = _RecordingPool()
    backend._new_pool = lambda: fresh
    # nothing in flight would report the crash: the pool is replaced at once and the task goes to it
    backend.pool = _BrokenPool()
    backend.submit({"run_id": "a"})
    assert backend.pool is fresh and fresh.tasks == [{"run_id": "a"}] and backend.in_flight() == 1
    assert backend.accepts()
    # a run in flight will report the crash at the next poll: the new task waits to be retried alone
    backend.pool = _BrokenPool()
    backend.futures = {cf.Future(): {"run_id": "b"}}
    backend.submit({"run_id": "c"})
    assert backend.suspects == [{"run_id": "c"}] and not backend.accepts() and backend.in_flight() == 2


def test_sigkill_mid_sweep_then_rerun_gives_every_run_exactly_once(tmp_path):
    text = EXP.replace("lr = [0.1, 100.0], seed = [0, 1]", "lr = [0.1], seed = [0, 1, 2, 3]")
    path, exp = experiment(tmp_path, text)
    out = tmp_path / "out"
    env = {**os.environ, "FAKE_RUN_SECONDS": "0.4"}
    cmd = [sys.executable, "-m", "sparsetopo", "sweep", str(path), "--profile", "paper", "--jobs", "2",
           "--run-fn", FAKE, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if (out / "results.db").exists() and len(db_rows(out)) >= 3:  # the store appears with its tables
                break
            time.sleep(0.1)
        else:
            pytest.fail("the sweep recorded nothing")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    recorded = len(db_rows(out))
    assert 3 <= recorded < len(exp.runs)
    time.sleep(1.5)  # orphaned workers notice and exit
    subprocess.run(cmd, env={**env, "FAKE_RUN_SECONDS": "0"}, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    with sqlite3.connect(out / "results.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        counts = dict(conn.execute("SELECT id, COUNT(*) FROM runs GROUP BY id").fetchall())
        statuses = {s for (s,) in conn.execute("SELECT status FROM runs")}
        metrics = conn.execute("SELECT run_id, COUNT(*), COUNT(DISTINCT step) FROM metrics GROUP BY run_id").fetchall()
    assert counts == {r.id: 1 for r in exp.runs}
    assert statuses == {"completed"}
    assert len(metrics) == len(exp.runs) and all(n == 4 and n == distinct for _, n, distinct in metrics)


def _writer(db: str, prefix: str, n: int) -> None:
    store = ResultsStore(db, timeout=60)
    for i in range(n):
        store.record_run(f"{prefix}-{i}", "train", {"seed": i}, "completed",
                         summary={"final_test_accuracy": 0.9, "wall_seconds": 1.0},
                         metrics=[{"step": s, "test_accuracy": 0.5 + s / 100} for s in range(1, 21)])
    store.close()


def test_two_writers_at_once(tmp_path):
    db = str(tmp_path / "results.db")
    ResultsStore(db).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, name, 60)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (120,)
        assert conn.execute("SELECT COUNT(*) FROM metrics").fetchone() == (120 * 20,)


def test_a_second_sweep_of_a_busy_directory_is_refused_and_each_run_runs_once(tmp_path):
    text = EXP.replace("lr = [0.1, 100.0], seed = [0, 1]", "lr = [0.1], seed = [0, 1, 2]")
    path, exp = experiment(tmp_path, text)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sparsetopo", "sweep", str(path), "--profile", "paper", "--out", str(out),
           "--jobs", "1", "--run-fn", FAKE]
    env = {**os.environ, "FAKE_RUN_SECONDS": "1.5"}  # 9 runs one at a time: the first sweep holds the folder ~14 s
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not calls(out) and time.time() < deadline:  # the first sweep holds the directory
        time.sleep(0.05)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    err = second.stderr.strip().splitlines()
    assert len(err) == 1 and "is in use by another sweep" in err[0] and "Traceback" not in second.stderr
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err.decode()
    assert sorted(calls(out)) == sorted(r.id for r in exp.runs)  # each run exactly once
    with sqlite3.connect(out / "results.db") as conn:  # and recorded with its own timing, once
        assert conn.execute("SELECT MAX(attempts) FROM runs").fetchone() == (1,)
    assert dict(db_rows(out)) == {r.id: "completed" for r in exp.runs}


def test_sweep_cli_refuses_bad_options_before_running(tmp_path, capsys):
    from sparsetopo.cli import main

    path, _ = experiment(tmp_path)
    assert main(["sweep", str(path), "--backend", "local", "--profile", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "profile 'nope' is not declared" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["sweep", str(path), "--profile", "paper", "--dry-run", "--out", str(tmp_path / "o")]) == 0
    assert "20 distinct runs" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


def test_a_run_whose_worker_died_resumes_from_its_checkpoint(tmp_path):
    text = EXP.replace("axes = { lr = [0.1, 100.0], seed = [0, 1] }",
                       'cases = [{ widths = "303,100" }]\naxes = { seed = [0] }')
    _, exp = experiment(tmp_path, text)
    out = tmp_path / "out"
    result = run_sweep([exp], out, jobs=1, run_fn=FAKE, progress=False, max_retries=1)
    assert result.ok and result.completed == len(exp.runs)
    with ResultsStore(out) as store:
        (dense,) = [r for r in store.runs() if r["hparams"].get("widths") == "303,100"]
        assert dense["status"] == "completed" and dense["summary"]["resumed_from_step"] == 20


def test_store_adds_new_columns_to_an_older_store_and_estimates_from_cpu_time(tmp_path):
    db = tmp_path / "results.db"
    with sqlite3.connect(db) as conn:  # the first schema, without cpu_seconds
        conn.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, command TEXT NOT NULL, hparams TEXT NOT NULL, status "
                     "TEXT NOT NULL, started_at REAL, finished_at REAL, wall_seconds REAL, steps INTEGER, "
                     "final_test_accuracy REAL, best_test_accuracy REAL, pruned_test_accuracy REAL, weights_total "
                     "INTEGER, weights_nonzero INTEGER, summary TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 1)")
    with ResultsStore(db) as store:
        store.record_run("train-x", "train", {"model": "lenet5", "steps": 100}, "completed",
                         summary={"wall_seconds": 50.0, "steps": 100}, cpu_seconds=20.0)
        assert store.runs()[0]["cpu_seconds"] == 20.0
    from sparsetopo.experiments.estimate import describe_plan

    path, _ = experiment(tmp_path, EXP.replace("[fixed]\nsteps = 40", '[fixed]\nsteps = 1000\nmodel = "lenet5"'))
    text = describe_plan([load_experiment(path, "paper")], tmp_path)
    # 4 dense runs of lenet5 at 0.2 CPU s per step (from cpu_seconds, not wall) = 800 s, and 8 retraining runs
    # on pruned topologies costed like them = 1600 s; no timing for one-shot pruning
    assert "20 distinct runs, 12,000 training steps" in text
    assert "0.67 CPU-hours" in text
    assert "extrapolated from other widths for: lenet5/mnist/file (8 runs)" in text
    assert "no timing for (left out): lenet5/mnist/dense/one-shot (8 runs)" in text


def test_reproduce_sweeps_the_shipped_files_and_writes_the_report(tmp_path, monkeypatch, capsys):
    from sparsetopo.cli import main

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "fig7.toml").write_text(textwrap.dedent(EXP.replace("lr = [0.1, 100.0], seed = [0, 1]",
                                                                   "lr = [0.1], seed = [0, 1]")))
    (shipped / "fig9.toml").write_text(textwrap.dedent("""
        [experiment]
        name = "fig9"
        kind = "fig9"
        [fixed]
        steps = 40
        [stages.grid]
        command = "train"
        axes = { scale = ["neurons:0.5", "neurons:0.1"], topology = ["random"], seed = [0, 1] }
        [profiles.paper]
        [profiles.smoke]
        fixed = { steps = 20 }
        """))
    monkeypatch.setenv("SPARSETOPO_EXPERIMENTS", str(shipped))
    out = tmp_path / "out"
    assert main(["reproduce", "fig10", "--out", str(out)]) == 2
    assert "fig10 is not a shipped file; choose all or names among: fig7, fig9" in capsys.readouterr().err
    assert main(["reproduce", "fig7,fig9", "--profile", "paper", "--dry-run", "--out", str(out)]) == 0
    plan_text = capsys.readouterr().out
    assert "mini (profile paper)" in plan_text and "fig9 (profile paper)" in plan_text and not out.exists()
    assert main(["reproduce", "fig9", "--dry-run", "--probe", "--estimate-from", str(tmp_path), "--out", str(out)]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main(["reproduce", "all", "--profile", "smoke", "--out", str(out)]) == 2  # fig7 has no smoke profile
    assert "profile 'smoke' is not declared" in capsys.readouterr().err and not out.exists()
    assert main(["reproduce", "all", "--profile", "paper", "--jobs", "2", "--run-fn", FAKE, "--out", str(out)]) == 0
    page = (out / "report" / "index.md").read_text()
    assert "## mini" in page or "mini" in page
    assert (out / "report" / "figures" / "fig9_accuracy_vs_sparsity.svg").exists()
    assert (out / "report" / "figures" / "mini_accuracy_vs_sparsity.png").exists()
    with ResultsStore(out) as store:
        assert {e["name"] for e in store.experiments()} == {"mini", "fig9"}
        assert store.count() == 2 + 4 + 4 + 4


def test_the_store_never_appears_without_its_tables(tmp_path, monkeypatch):
    """results.db is created whole under a temporary name and linked into place: a reader polling for the
    file (as the sigkill test does) can never open a database without its tables."""
    import sparsetopo.experiments.results as results

    seen = []
    real_link = os.link

    def link(src, dst):
        assert not os.path.exists(dst)
        conn = sqlite3.connect(src)  # what a reader would see the instant the name appears
        seen.append({r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")})
        conn.close()
        real_link(src, dst)

    monkeypatch.setattr(results.os, "link", link)
    ResultsStore(tmp_path / "out").close()
    assert seen == [{"runs", "metrics", "experiments", "memberships"}]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.db"]  # no temporary left


@pytest.mark.parametrize("command", ["report", "reproduce"])
def test_a_corrupt_store_is_one_line_not_a_traceback(tmp_path, capsys, command):
    from sparsetopo.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "results.db").write_bytes(os.urandom(8192))
    argv = ["report", str(out), "--out", str(tmp_path / "rep")] if command == "report" else \
        ["reproduce", "lr", "--profile", "smoke", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results.db: not a readable results store" in err and "move it away" in err


def test_local_workers_spread_over_the_visible_gpus(tmp_path, monkeypatch):
    """With several GPUs, each local worker sees one of them in turn (two workers, two GPUs: one each);
    a run naming its device index (cuda:N) keeps CUDA's own numbering, and one GPU changes nothing."""
    import json

    import sparsetopo.experiments.runner as runner

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(runner, "visible_gpus", lambda: ("3", "5"))
    monkeypatch.setenv("FAKE_RUN_SECONDS", "3")  # both workers start before either finishes
    text = EXP.split("[stages.oneshot]")[0].replace("axes = { lr = [0.1, 100.0], seed = [0, 1] }",
                                                     "axes = { lr = [0.1], seed = [0, 1] }") + "[profiles.paper]\n"
    _, exp = experiment(tmp_path, text)
    out = tmp_path / "out"
    assert run_sweep([exp], out, jobs=2, run_fn=FAKE, progress=False).completed == 2
    seen = sorted(json.loads((out / "runs" / r.id / "summary.json").read_text())["cuda_visible_devices"]
                  for r in exp.runs)
    assert seen == ["3", "5"]
    specs = list(exp.runs)
    assert runner.gpu_placement(specs) == ("3", "5")
    explicit = [type(s)(**{**s.__dict__, "params": {**s.params, "device": "cuda:1"}}) for s in specs]
    assert runner.gpu_placement(explicit) == ()
    assert runner.gpu_placement([type(s)(**{**s.__dict__, "params": {**s.params, "device": "cpu"}})
                                 for s in specs]) == ()
    monkeypatch.setattr(runner, "visible_gpus", lambda: ("0",))
    assert runner.gpu_placement(specs) == ()


def test_probe_measures_each_kind_of_run_here_and_estimates_every_run(tmp_path, monkeypatch):
    import sparsetopo.experiments.estimate as estimate
    from sparsetopo.experiments.estimate import Cost, describe_plan, probe_params, probe_timings
    from sparsetopo.experiments.runner import plan

    _, exp = experiment(tmp_path)
    specs = plan([exp])
    by_id = {s.id: s for s in specs}
    retrain = next(s for s in specs if s.stage == "retrain")
    source = by_id[retrain.deps[0]]
    params = probe_params(retrain, by_id, 7)
    # the structure of a prune not made yet: a random one at the density it prunes to; one evaluation at the end
    assert params["topology"] == f"random:density={1 - source.params['sparsity']:g}"
    assert params["steps"] == 7 and params["eval_every"] == 7 and "{run:" not in json.dumps(params)
    costs, failed = probe_timings(specs, steps=5, progress=False)
    assert not failed
    assert {k[3] for k in costs} == {"dense", "file"} and any(k[4] for k in costs)  # one-shot: from its dense key
    for key, cost in costs.items():
        assert isinstance(cost, Cost) and cost.evaluation > 0 and (cost.step > 0) == (not key[4])
    monkeypatch.setattr(estimate, "probe_timings", lambda *a, **k: (costs, []))
    text = describe_plan([exp], tmp_path / "none", probe=5, progress=False)
    assert "from probes measured here (5 and 10 steps" in text
    assert "lenet300/mnist/file: 8 runs" in text and "no timing" not in text and "extrapolated" not in text


def test_dry_run_says_what_is_left_of_a_sweep_under_way(tmp_path):
    from sparsetopo.experiments.estimate import describe_plan
    from sparsetopo.experiments.runner import plan

    _, exp = experiment(tmp_path)
    dense = [s for s in plan([exp]) if s.stage == "dense"]
    with ResultsStore(tmp_path / "out") as store:  # two of the four dense runs (40 steps each) are done
        for spec in dense[:2]:
            store.record_run(spec.id, spec.command, spec.params, "completed",
                             summary={"wall_seconds": 1.0, "steps": 40}, cpu_seconds=360.0)
    text = describe_plan([exp], tmp_path / "out")
    # 9 s a step: 4 dense runs and 8 retraining runs at 360 s each (one-shot runs have no timing); 10 to go
    assert "1.20 CPU-hours" in text
    assert "2 of the runs are finished in" in text and "the other 18: 1.00 CPU-hours" in text


def test_a_probe_that_cannot_run_says_why_and_estimates_nothing(tmp_path):
    from sparsetopo.experiments.estimate import describe_plan

    _, exp = experiment(tmp_path, """
        [experiment]
        name = "mini"
        [fixed]
        steps = 40
        dataset = "cifar10"
        [stages.dense]
        command = "train"
        axes = { seed = [0, 1] }
        [profiles.paper]
        """)
    text = describe_plan([exp], tmp_path / "out", probe=2, data_dir=str(tmp_path / "no-data"), progress=False)
    assert "no kind of run could be probed" in text
    assert "probe failed for lenet300/cifar10/dense:" in text and "missing" in text
