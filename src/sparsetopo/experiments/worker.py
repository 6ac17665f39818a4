"""Executing one run: the same function serves local worker processes and Ray tasks.

``execute(task)`` calls the run function (``sparsetopo.training.api:run`` unless the task names another)
on the run's directory, and returns the outcome with the run's summary and metrics, so whoever called it
can import the result into ``results.db`` in one transaction. It never raises for a failed run: the error
is part of the outcome. The run function resumes from its checkpoint when called again on the same
directory, which is what makes a retried task (a lost Ray worker, a re-run sweep) continue, not restart.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import resource
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from sparsetopo.errors import UserError
from sparsetopo.experiments.hparams import resolve
from sparsetopo.experiments.results import read_metrics_file

DEFAULT_RUN_FN = "sparsetopo.training.api:run"
LOCKS = ".locks"


def load_function(path: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function."""
    module, _, name = path.partition(":")
    if not module or not name:
        raise UserError(f"run function {path!r} must look like 'package.module:function'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"run function {path!r} cannot be loaded ({exc})") from None


def make_task(run_id: str, command: str, params: dict[str, Any], runs_dir: str | Path, *,
              run_fn: str = DEFAULT_RUN_FN, threads: int | None = None,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A plain, picklable description of one run for :func:`execute`."""
    return {"run_id": run_id, "command": command, "params": dict(params), "runs_dir": str(Path(runs_dir).resolve()),
            "run_fn": run_fn, "threads": threads, "extra": dict(extra or {})}


def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task to its end; return ``{run_id, status, summary, metrics, error, started_at, finished_at,
    cpu_seconds}``."""
    runs_dir = Path(task["runs_dir"])
    out_dir = runs_dir / task["run_id"]
    started = time.time()
    cpu0 = _cpu_seconds()
    outcome: dict[str, Any] = {"run_id": task["run_id"], "status": "failed", "summary": {}, "metrics": [],
                               "error": None, "started_at": started, "finished_at": None, "cpu_seconds": None}
    try:
        params = resolve(task["params"], runs_dir)
        params.update({k: v for k, v in task.get("extra", {}).items() if v is not None})
        fn = load_function(task.get("run_fn") or DEFAULT_RUN_FN)
        (runs_dir / LOCKS).mkdir(parents=True, exist_ok=True)
        # One process at a time per run directory, even across two sweeps of the same output directory.
        with open(runs_dir / LOCKS / f"{task['run_id']}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            summary = fn(task["command"], params, out_dir, quiet=True, threads=task.get("threads"))
        summary = dict(summary or {})
        status = summary.get("status")
        outcome["summary"] = summary
        if status in ("completed", "diverged"):
            outcome["status"] = status
        else:
            outcome["error"] = f"the run ended with status {status!r}"
    except UserError as exc:
        outcome["error"] = str(exc)
    except Exception as exc:  # a bug or a crash inside the run: record it, the sweep goes on
        tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]).strip()
        outcome["error"] = f"{type(exc).__name__}: {exc}\n{tail}"
    outcome["metrics"] = read_metrics_file(out_dir)
    outcome["finished_at"] = time.time()
    outcome["cpu_seconds"] = round(_cpu_seconds() - cpu0, 3)
    return outcome


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads: the cost of a run whatever else the machine does."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # the sweep was killed: do not run on as an orphan
        time.sleep(0.5)


def init_local_worker(parent_pid: int) -> None:
    """Initialiser of a local worker process: exit as soon as the sweep process is gone."""
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
