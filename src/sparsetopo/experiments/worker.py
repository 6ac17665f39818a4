"""Executing one run: the same function serves local worker processes and Ray tasks.

``execute(task)`` calls the run function (``sparsetopo.runs:run`` unless the task names another) on the
run's directory, and returns an :class:`Outcome` with the run's summary and metrics, so whoever called it
can import the result into ``results.db`` in one transaction. It never raises for a failed run: the error
is part of the outcome. The run function resumes from its checkpoint when called again on the same
directory, which is what makes a retried task (a lost Ray worker, a re-run sweep) continue, not restart.
Parameters keep their ``{run:ID}`` references: the run function finds run ID beside the run's own directory.
"""

from __future__ import annotations

import importlib
import os
import resource
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsetopo.desc.status import RunStatus
from sparsetopo.errors import UserError
from sparsetopo.experiments.results import read_metrics_file

DEFAULT_RUN_FN = "sparsetopo.runs:run"


def load_function(path: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function."""
    module, _, name = path.partition(":")
    if not module or not name:
        raise UserError(f"run function {path!r} must look like 'package.module:function'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"run function {path!r} cannot be loaded ({exc})") from None


@dataclass(frozen=True)
class Task:
    """One run to execute: picklable, the same for local processes and Ray. ``options`` are the run options
    every run of the sweep gets (the data root the driver resolved, the checkpoint interval)."""

    run_id: str
    command: str
    params: dict[str, Any]
    runs_dir: str
    run_fn: str = DEFAULT_RUN_FN
    threads: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def out_dir(self) -> Path:
        return Path(self.runs_dir) / self.run_id


@dataclass
class Outcome:
    """What became of a task."""

    run_id: str
    status: RunStatus = RunStatus.FAILED
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    cpu_seconds: float | None = None

    @classmethod
    def lost(cls, task: Task, why: str) -> Outcome:
        """A task whose process was lost (it died, or Ray gave up on it)."""
        return cls(task.run_id, error=why, finished_at=time.time())


def make_task(run_id: str, command: str, params: dict[str, Any], runs_dir: str | Path, *,
              run_fn: str = DEFAULT_RUN_FN, threads: int = 1, options: dict[str, Any] | None = None) -> Task:
    return Task(run_id, command, dict(params), str(Path(runs_dir).resolve()), run_fn, threads,
                {k: v for k, v in (options or {}).items() if v is not None})


def execute(task: Task) -> Outcome:
    """Run one task to its end and say how it ended."""
    started = time.time()
    cpu0 = _cpu_seconds()
    outcome = Outcome(task.run_id, started_at=started)
    try:
        fn = load_function(task.run_fn or DEFAULT_RUN_FN)
        summary = dict(fn(task.command, {**task.params, **task.options}, task.out_dir, quiet=True) or {})
        outcome.summary = summary
        try:
            status = RunStatus(summary.get("status"))
        except ValueError:
            status = RunStatus.FAILED
        if status.finished:
            outcome.status = status
        else:
            outcome.error = f"the run ended with status {summary.get('status')!r}"
    except UserError as exc:
        outcome.error = str(exc)
    except Exception as exc:  # a bug or a crash inside the run: record it, the sweep goes on
        tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]).strip()
        outcome.error = f"{type(exc).__name__}: {exc}\n{tail}"
    outcome.metrics = read_metrics_file(task.out_dir)
    outcome.finished_at = time.time()
    outcome.cpu_seconds = round(_cpu_seconds() - cpu0, 3)
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


def init_local_worker(parent_pid: int, gpu_slots: Any = None, gpus: tuple[str, ...] = ()) -> None:
    """Initialiser of a local worker process: exit as soon as the sweep process is gone; with ``gpus`` (the
    visible CUDA devices), see only the next of them in turn (``gpu_slots``: a shared counter), before
    anything touches CUDA, so the workers spread over the GPUs, several per GPU when there are more."""
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if gpus and gpu_slots is not None:
        with gpu_slots.get_lock():
            slot = gpu_slots.value
            gpu_slots.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
