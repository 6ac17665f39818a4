"""The results store: one SQLite database (``results.db``, WAL mode) per sweep output directory.

Tables:

- ``runs``: one row per run (id, command, hyperparameters as JSON, status, timings (wall seconds, and the
  CPU seconds of the process that ran it), final metrics, the full summary as JSON, the error of a failed
  run, the number of attempts).
- ``metrics``: the run's evaluations over time (run_id, step, epoch, train_loss, test_loss, test_accuracy).
- ``experiments``: each experiment file swept into the directory (name, kind, title, profile, source text).
- ``memberships``: which runs belong to which experiment and stage (a run shared by two experiments, such
  as a pruned network both Fig. 7 and Fig. 8 retrain from, is stored and run once).

A finished run is imported in one transaction (its row and all its metrics, or nothing), so a sweep killed
at any moment leaves no half-written run; several processes may write at once (SQLite serialises the
writers, each waits up to ``timeout`` seconds for the lock).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sparsetopo.desc.status import FINISHED, RunStatus
from sparsetopo.errors import UserError
from sparsetopo.fileio import atomic_write_text

DB_NAME = "results.db"
REGISTRY = "experiments.json"  # the experiments swept into the directory and their runs, as text

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    hparams TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    wall_seconds REAL,
    cpu_seconds REAL,
    steps INTEGER,
    final_test_accuracy REAL,
    best_test_accuracy REAL,
    pruned_test_accuracy REAL,
    weights_total INTEGER,
    weights_nonzero INTEGER,
    summary TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(id),
    step INTEGER NOT NULL,
    epoch REAL,
    train_loss REAL,
    test_loss REAL,
    test_accuracy REAL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    title TEXT,
    description TEXT,
    profile TEXT,
    path TEXT,
    source TEXT,
    findings TEXT,
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS memberships (
    experiment TEXT NOT NULL,
    stage TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (experiment, stage, run_id)
);
CREATE INDEX IF NOT EXISTS memberships_run ON memberships(run_id);
"""

# Columns added after the first version of the schema (added to older stores when opened).
_ADDED_COLUMNS = (("cpu_seconds", "REAL"),)

_METRIC_KEYS = ("step", "epoch", "train_loss", "test_loss", "test_accuracy")


def _apply_schema(conn: sqlite3.Connection) -> None:
    for stmt in _SCHEMA.strip().split(";"):
        if stmt.strip():
            conn.execute(stmt)
    have = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    for column, kind in _ADDED_COLUMNS:
        if column not in have:
            conn.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")


def _create(path: Path) -> None:
    """Create the store with its whole schema under a temporary name, then link it into place, so that no
    reader ever sees a database without its tables (if another process created it first, theirs stays)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            _apply_schema(conn)
            conn.execute("COMMIT")
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
            if os.path.exists(leftover):
                os.unlink(leftover)


def _num(value: Any) -> float | None:
    """A metric value for SQLite: NaN and infinities (a diverged run's loss) are stored as NULL."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if x == x and abs(x) != float("inf") else None


class ResultsStore:
    """The ``results.db`` of an output directory. Cheap to open; one connection per process."""

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        path = Path(path)
        self.path = path / DB_NAME if path.is_dir() or path.suffix != ".db" else path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            _create(self.path)
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            with self.transaction():
                _apply_schema(self.conn)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path}: not a readable results store ({exc}); move it away and run the sweep "
                            "again: it rebuilds the store from the run directories beside it") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: all of it or none of it, one writer at a time."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- writing -------------------------------------------------------------------------------------

    def register_experiment(self, exp: Any) -> None:
        """Record an experiment and its runs' memberships (idempotent)."""
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO experiments (name, kind, title, description, profile, path, source,"
                " findings, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (exp.name, exp.kind, exp.title, exp.description, exp.profile, exp.path, exp.source,
                 json.dumps(exp.findings), time.time()))
            c.execute("DELETE FROM memberships WHERE experiment = ?", (exp.name,))
            c.executemany("INSERT OR IGNORE INTO memberships (experiment, stage, run_id) VALUES (?, ?, ?)",
                          [(exp.name, stage, rid) for stage, rid in exp.memberships])

    def record_run(self, run_id: str, command: str, params: Mapping[str, Any], status: str, *,
                   summary: Mapping[str, Any] | None = None, metrics: Sequence[Mapping[str, Any]] = (),
                   error: str | None = None, started_at: float | None = None,
                   finished_at: float | None = None, cpu_seconds: float | None = None) -> None:
        """Insert or replace a run's row and all its metrics in one transaction."""
        status = RunStatus(status)  # a ValueError for anything else
        summary = dict(summary or {})
        finished_at = time.time() if finished_at is None else finished_at
        if summary.get("cpu_seconds") is not None:  # the run's own measure: the same however it is recorded
            cpu_seconds = summary["cpu_seconds"]
        rows = []
        for m in metrics:
            if m.get("step") is None:
                continue
            rows.append((run_id, int(m["step"]), _num(m.get("epoch")), _num(m.get("train_loss")),
                         _num(m.get("test_loss")), _num(m.get("test_accuracy"))))
        with self.transaction() as c:
            prev = c.execute("SELECT attempts FROM runs WHERE id = ?", (run_id,)).fetchone()
            attempts = (prev["attempts"] + 1) if prev else 1
            c.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            c.execute(
                "INSERT OR REPLACE INTO runs (id, command, hparams, status, started_at, finished_at,"
                " wall_seconds, cpu_seconds, steps, final_test_accuracy, best_test_accuracy, pruned_test_accuracy,"
                " weights_total, weights_nonzero, summary, error, attempts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, command, json.dumps(dict(params), sort_keys=True), status, started_at, finished_at,
                 _num(summary.get("wall_seconds")), _num(cpu_seconds), summary.get("steps"),
                 _num(summary.get("final_test_accuracy")), _num(summary.get("best_test_accuracy")),
                 _num(summary.get("pruned_test_accuracy")), summary.get("weights_total"),
                 summary.get("weights_nonzero"), json.dumps(summary, sort_keys=True, default=str) if summary else None,
                 error, attempts))
            c.executemany("INSERT OR REPLACE INTO metrics (run_id, step, epoch, train_loss, test_loss,"
                          " test_accuracy) VALUES (?, ?, ?, ?, ?, ?)", rows)

    def export_registry(self, path: str | Path) -> None:
        """Write every registered experiment with its memberships to ``path`` (JSON, atomically): with the
        run directories, all that is needed to rebuild the store (:meth:`import_registry`)."""
        rows = []
        for exp in self.experiments():
            exp = {k: exp[k] for k in ("name", "kind", "title", "description", "profile", "source", "findings")}
            exp["memberships"] = [list(m) for m in self.memberships(exp["name"])]
            rows.append(exp)
        atomic_write_text(path, json.dumps({"experiments": rows}, indent=1, sort_keys=True) + "\n")

    def import_registry(self, path: str | Path) -> None:
        try:
            rows = json.loads(Path(path).read_text(encoding="utf-8"))["experiments"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path}: unreadable experiment registry ({exc})") from None
        for row in rows:
            self.register_experiment(SimpleNamespace(
                name=row["name"], kind=row["kind"], title=row.get("title"), description=row.get("description"),
                profile=row.get("profile"), path=row["name"], source=row.get("source"),
                findings=row.get("findings", []), memberships=[tuple(m) for m in row.get("memberships", [])]))

    def import_finished(self, runs_dir: str | Path, ids: Sequence[str]) -> list[str]:
        """Record the runs of ``ids`` that finished in ``runs_dir/<id>`` (their ``summary.json`` says so) but
        are not finished here: a results folder published without its store, or without checkpoints, is
        not run again. Returns the ids imported."""
        done = self.statuses(ids)
        imported = []
        for rid in ids:
            if rid in done and RunStatus(done[rid]).finished:
                continue
            run = Path(runs_dir) / rid
            try:
                meta = json.loads((run / "hparams.json").read_text())
                summary = json.loads((run / "summary.json").read_text())
            except (OSError, ValueError):
                continue
            if meta.get("run_id") != rid or summary.get("status") not in FINISHED:
                continue
            params = {k: v for k, v in meta.get("canonical", {}).items() if k != "command"}
            self.record_run(rid, meta["command"], params, summary["status"], summary=summary,
                            metrics=read_metrics_file(run))
            imported.append(rid)
        return imported

    # -- reading -------------------------------------------------------------------------------------

    def statuses(self, ids: Sequence[str] | None = None) -> dict[str, str]:
        rows = self.conn.execute("SELECT id, status FROM runs").fetchall()
        out = {r["id"]: r["status"] for r in rows}
        return out if ids is None else {i: out[i] for i in ids if i in out}

    def runs(self, experiment: str | None = None) -> list[dict[str, Any]]:
        """Every run (of one experiment) as a dict, hyperparameters and summary decoded."""
        if experiment is None:
            rows = self.conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
        else:
            rows = self.conn.execute(
                "SELECT DISTINCT runs.* FROM runs JOIN memberships ON memberships.run_id = runs.id"
                " WHERE memberships.experiment = ? ORDER BY runs.id", (experiment,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["hparams"] = json.loads(d["hparams"])
            d["summary"] = json.loads(d["summary"]) if d["summary"] else {}
            out.append(d)
        return out

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT step, epoch, train_loss, test_loss, test_accuracy FROM metrics"
                                 " WHERE run_id = ? ORDER BY step", (run_id,)).fetchall()
        return [dict(r) for r in rows]

    def experiments(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM experiments ORDER BY name").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["findings"] = json.loads(d["findings"]) if d.get("findings") else []
            out.append(d)
        return out

    def memberships(self, experiment: str) -> list[tuple[str, str]]:
        rows = self.conn.execute("SELECT stage, run_id FROM memberships WHERE experiment = ?"
                                 " ORDER BY rowid", (experiment,)).fetchall()
        return [(r["stage"], r["run_id"]) for r in rows]

    def count(self, run_id: str | None = None) -> int:
        if run_id is None:
            return int(self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        return int(self.conn.execute("SELECT COUNT(*) FROM runs WHERE id = ?", (run_id,)).fetchone()[0])


def read_metrics_file(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluations in a run's ``metrics.jsonl`` (a torn last line, from a kill, is ignored)."""
    path = Path(run_dir) / "metrics.jsonl"
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    by_step: dict[int, dict[str, Any]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            by_step[int(row["step"])] = {k: row.get(k) for k in _METRIC_KEYS}
    out = [by_step[s] for s in sorted(by_step)]
    return out


def rebuild(out: str | Path) -> bool:
    """Create ``out/results.db`` from ``out/experiments.json`` and the finished run directories under
    ``out/runs`` when the store is missing; True when it was rebuilt."""
    out = Path(out)
    if (out / DB_NAME).exists() or not (out / REGISTRY).exists():
        return False
    with ResultsStore(out) as store:
        store.import_registry(out / REGISTRY)
        ids = sorted({rid for exp in store.experiments() for _, rid in store.memberships(exp["name"])})
        store.import_finished(out / "runs", ids)
    return True
