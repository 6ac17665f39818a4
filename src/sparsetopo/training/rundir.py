"""A run's directory: its description (``hparams.json``), resume checks, and summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sparsetopo.desc.identity import RunDesc
from sparsetopo.desc.status import RunStatus
from sparsetopo.errors import UserError
from sparsetopo.fileio import atomic_write_json, remove_stale_temps

HPARAMS = "hparams.json"
SUMMARY = "summary.json"


def _read_json(run: Path, name: str, missing: str) -> dict[str, Any]:
    path = Path(run) / name
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run}: {missing} (no {name})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); move it away to start the run again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object; move it away to start the run again")
    return data


def read_hparams(run: Path) -> dict[str, Any]:
    return _read_json(run, HPARAMS, "not a run directory")


def read_summary(run: Path) -> dict[str, Any]:
    return _read_json(run, SUMMARY, "the run has not finished")


def recorded_hints(out: Path) -> dict[str, str]:
    """Where the runs this run depends on were when it started (relative to ``out``)."""
    path = out / HPARAMS
    if not path.exists():
        return {}
    refs = read_hparams(out).get("refs", {})
    return {str(k): str(v) for k, v in refs.items()} if isinstance(refs, dict) else {}


def finished_summary(out: Path) -> dict[str, Any] | None:
    """The summary of a run in ``out`` that already finished (completed or diverged), else None."""
    if not (out / SUMMARY).exists():
        return None
    summary = read_summary(out)
    try:
        return summary if RunStatus(summary.get("status")).finished else None
    except ValueError:
        return None


def check_same_run(out: Path, desc: RunDesc) -> bool:
    """Whether ``out`` already holds this run (True) or nothing (False); a directory holding a different
    run, or something else, is refused naming what differs. Writes nothing."""
    path = out / HPARAMS
    if not path.exists():
        if out.exists() and not out.is_dir():
            raise UserError(f"{out} is a file, not a run directory; choose another --out")
        if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
            raise UserError(f"{out} exists and is not a sparsetopo run directory; choose an empty or new --out")
        return False
    existing = read_hparams(out)
    theirs = existing.get("canonical", {})
    ours = desc.canonical()
    if theirs != ours:
        keys = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        their_full = {"command": existing.get("command"), **existing.get("hparams", {})}
        our_full = {"command": desc.kind, **desc.to_dict()}
        diff = ", ".join(f"{k}: {their_full.get(k, theirs.get(k))!r} there, {our_full.get(k, ours.get(k))!r} here"
                         for k in keys)
        raise UserError(f"{out} holds a different run ({diff}); choose another --out or the same options")
    return True


def claim(out: Path, desc: RunDesc, refs: dict[str, str]) -> None:
    """Write ``hparams.json`` for ``desc`` (after every input was checked), and clear what a killed
    process left behind: temporary files of interrupted atomic writes."""
    remove_stale_temps(out)
    if (out / HPARAMS).exists():
        return
    atomic_write_json(out / HPARAMS, {"command": desc.kind, "run_id": desc.run_id, "canonical": desc.canonical(),
                                      "hparams": desc.to_dict(), "refs": refs})


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(out / SUMMARY, summary)
