"""A run's directory: its hyperparameters, resume checks, and summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sparsetopo.errors import UserError
from sparsetopo.fileio import atomic_write_json
from sparsetopo.training.hparams import run_hash

HPARAMS = "hparams.json"
SUMMARY = "summary.json"
FINISHED = ("completed", "diverged")


def run_id(command: str, canonical: dict[str, Any]) -> str:
    return run_hash({"command": command, **canonical})


def default_out(command: str, canonical: dict[str, Any]) -> Path:
    return Path("runs") / f"{command}-{run_id(command, canonical)}"


def prepare(out: Path, command: str, canonical: dict[str, Any], full: dict[str, Any]) -> dict[str, Any] | None:
    """Claim ``out`` for this run. Returns the existing summary if the run already finished, else None.

    A directory holding a different run is refused, naming the hyperparameters that differ.
    """
    path = out / HPARAMS
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{path}: unreadable ({exc}); choose another --out") from None
        theirs = {"command": existing.get("command"), **existing.get("canonical", {})}
        ours = {"command": command, **canonical}
        if theirs != ours:
            keys = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            their_full = {"command": existing.get("command"), **existing.get("hparams", {})}
            our_full = {"command": command, **full}
            diff = ", ".join(f"{k}: {their_full.get(k, theirs.get(k))!r} there, {our_full.get(k, ours.get(k))!r} here"
                             for k in keys)
            raise UserError(f"{out} holds a different run ({diff}); choose another --out or the same options")
        summary_path = out / SUMMARY
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())
            if summary.get("status") in FINISHED:
                return summary
        return None
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not a sparsetopo run directory; choose an empty or new --out")
    atomic_write_json(path, {"command": command, "run_id": run_id(command, canonical), "canonical": canonical,
                             "hparams": full})
    return None


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(out / SUMMARY, summary)


def _read_json(run: Path, name: str, missing: str) -> dict[str, Any]:
    path = Path(run) / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run}: {missing} (no {name})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None


def read_hparams(run: Path) -> dict[str, Any]:
    return _read_json(run, HPARAMS, "not a run directory")


def read_summary(run: Path) -> dict[str, Any]:
    return _read_json(run, SUMMARY, "the run has not finished")
