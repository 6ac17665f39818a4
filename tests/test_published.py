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
