"""A published results folder (run files without weights, checkpoints or store, as in ``study/``): the
report it holds is what ``sparsetopo report`` makes of it, and rerunning its sweep runs nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sparsetopo.experiments.runner import run_sweep
from sparsetopo.experiments.spec import load_experiment
from sparsetopo.report import write_report

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "published"


def published_copy(tmp_path: Path) -> Path:
    out = tmp_path / "published"
    shutil.copytree(FIXTURE, out, ignore=shutil.ignore_patterns("results.db*", ".lock", "report"))
    return out


def _comparable(path: Path) -> bytes:
    """A report file as compared: SVGs without the line naming the matplotlib that drew them."""
    data = path.read_bytes()
    if path.suffix == ".svg":
        data = b"\n".join(line for line in data.splitlines() if b"<dc:creator>" not in line
                          and b"Matplotlib v" not in line)
    return data


def test_the_committed_report_is_what_the_report_command_makes_of_the_folder(tmp_path):
    out = published_copy(tmp_path)
    write_report(out, out / "report")
    committed = {p.relative_to(FIXTURE / "report") for p in (FIXTURE / "report").rglob("*") if p.is_file()}
    made = {p.relative_to(out / "report") for p in (out / "report").rglob("*") if p.is_file()}
    assert made == committed
    for rel in sorted(committed):
        if rel.suffix == ".png":  # raster output can change with the freetype build; its SVG twin is compared
            continue
        assert _comparable(out / "report" / rel) == _comparable(FIXTURE / "report" / rel), rel


def test_a_rerun_over_finished_runs_without_checkpoints_runs_nothing(tmp_path):
    out = published_copy(tmp_path)
    (registered,) = json.loads((out / "experiments.json").read_text())["experiments"]
    source = tmp_path / f"{registered['name']}.toml"
    source.write_text(registered["source"])
    exp = load_experiment(source, registered["profile"])
    assert {rid for _, rid in exp.memberships} == {p.name for p in (out / "runs").iterdir()}
    result = run_sweep([exp], out, progress=False)
    assert (result.skipped, result.completed, result.failed) == (len(exp.runs), 0, 0)
    assert not list(out.rglob("checkpoint.pt"))  # nothing was trained


def test_sweeping_one_experiment_into_a_published_folder_keeps_the_others(tmp_path):
    """A fresh clone has no store: a sweep of one file must not drop the folder's other experiments (the
    report reads them from experiments.json)."""
    out = published_copy(tmp_path)
    registry = json.loads((out / "experiments.json").read_text())
    (registered,) = registry["experiments"]
    other = {**registered, "name": "other", "title": "another experiment over the same runs"}
    registry["experiments"].append(other)
    (out / "experiments.json").write_text(json.dumps(registry))
    source = tmp_path / f"{registered['name']}.toml"
    source.write_text(registered["source"])
    result = run_sweep([load_experiment(source, registered["profile"])], out, progress=False)
    assert result.completed == 0
    names = [e["name"] for e in json.loads((out / "experiments.json").read_text())["experiments"]]
    assert sorted(names) == sorted([registered["name"], "other"])
    assert {m[1] for m in json.loads((out / "experiments.json").read_text())["experiments"][1]["memberships"]} == {
        m[1] for m in registered["memberships"]}
