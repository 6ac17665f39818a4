"""The sweep runner: runs an experiment's runs N at a time, locally or on Ray, into one output directory.

Layout of an output directory::

    DIR/results.db          the results store (see :mod:`sparsetopo.experiments.results`)
    DIR/runs/<run id>/      one directory per run (hparams.json, metrics.jsonl, summary.json, checkpoint)

Runs already completed (or diverged) in ``results.db`` are skipped; a run whose dependency did not complete
is recorded as ``blocked``; a run that raises is recorded as ``failed`` with its error and the sweep goes on.
Re-running the sweep retries failed and blocked runs and resumes interrupted ones from their checkpoints.

A published folder keeps no weights. When a run still to do needs a finished run's weights (a one-shot
prune its dense run's ``checkpoint.pt``, a rewind its ``weights-stepN.pt``) and they are gone, the sweep
trains that run again from its description in ``DIR/runs/.restore/<id>`` (resumable like any run) and moves
only its weights into the run's directory, beside a ``restored.json`` saying whether the run's metrics came
out identical; the published files stay as they were.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from sparsetopo.data import ensure_datasets
from sparsetopo.data.files import resolve_root
from sparsetopo.desc.factories import is_factory
from sparsetopo.desc.identity import token
from sparsetopo.desc.status import RunStatus
from sparsetopo.errors import UserError
from sparsetopo.experiments.results import REGISTRY, ResultsStore, rebuild
from sparsetopo.experiments.spec import Experiment, Filter, RunSpec, merge_run_options, order_runs, select
from sparsetopo.experiments.worker import DEFAULT_RUN_FN, Outcome, Task, execute, init_local_worker, make_task
from sparsetopo.fileio import FolderLock, atomic_write_json
from sparsetopo.runs import describe
from sparsetopo.system import available_cores
from sparsetopo.training.loop import CHECKPOINT
from sparsetopo.training.rewind import snapshot_path

BACKENDS = ("local", "ray")


@dataclass
class SweepResult:
    total: int = 0
    skipped: int = 0
    completed: int = 0
    diverged: int = 0
    failed: int = 0
    blocked: int = 0
    wall_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.blocked == 0

    def line(self) -> str:
        return (f"{self.total} runs: {self.skipped} already done, {self.completed} completed, "
                f"{self.diverged} diverged, {self.failed} failed, {self.blocked} blocked "
                f"({self.wall_seconds:.0f} s)")


class Backend(Protocol):
    def accepts(self) -> bool: ...

    def submit(self, task: Task) -> None: ...

    def poll(self, timeout: float) -> list[Outcome]: ...

    def in_flight(self) -> int: ...

    def close(self) -> None: ...


class LocalBackend:
    """``jobs`` worker processes (spawned, so no state is shared) that each run one task at a time.

    A worker that dies (killed, out of memory) breaks the pool, and every run in flight is lost with it. A
    fresh pool takes over; the lost runs are then retried one at a time, so that a run that kills its worker
    again is known to be the culprit: it is retried up to ``max_retries`` times (resuming from its
    checkpoint) and then recorded as failed, while the runs that were only caught in the crash go on.
    """

    def __init__(self, jobs: int, max_retries: int = 2, gpus: tuple[str, ...] = ()) -> None:
        self.jobs = jobs
        self.max_retries = max_retries
        self.ctx = multiprocessing.get_context("spawn")
        self.gpus = gpus  # the CUDA devices the workers are spread over, one each in turn
        self.gpu_slots = self.ctx.Value("i", 0)
        self.pool = self._new_pool()
        self.futures: dict[cf.Future, Task] = {}
        self.retries: dict[str, int] = {}
        self.suspects: list[Task] = []  # lost in a crash with others: retried alone
        self.isolating = False

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=self.jobs, mp_context=self.ctx, initializer=init_local_worker,
                                      initargs=(os.getpid(), self.gpu_slots, self.gpus))

    def accepts(self) -> bool:
        return not self.isolating and len(self.futures) < self.jobs

    def submit(self, task: Task) -> None:
        try:
            self.futures[self.pool.submit(execute, task)] = task
            return
        except BrokenProcessPool:
            pass
        # A worker died since the last poll; this task never started.
        if self.futures:
            # the runs in flight report the crash at the next poll, which replaces the pool: keep the task
            # with the runs to retry one at a time, and submit nothing more until then
            self.isolating = True
            self.suspects.append(task)
            return
        self.pool.shutdown(wait=False, cancel_futures=True)  # nothing in flight will report it: replace now
        self.pool = self._new_pool()
        self.futures[self.pool.submit(execute, task)] = task

    def in_flight(self) -> int:
        return len(self.futures) + len(self.suspects)

    def poll(self, timeout: float) -> list[Outcome]:
        outcomes: list[Outcome] = []
        if self.futures:
            done, _ = cf.wait(list(self.futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
            lost: list[Task] = []
            for fut in done:
                task = self.futures.pop(fut)
                try:
                    outcomes.append(fut.result())
                except BrokenProcessPool:
                    lost.append(task)
                except Exception as exc:  # pickling problems and the like
                    outcomes.append(Outcome.lost(task, f"{type(exc).__name__}: {exc}"))
            if lost:
                lost.extend(self.futures.values())
                self.futures.clear()
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = self._new_pool()
                if len(lost) == 1:  # it died alone: it is the culprit
                    task = lost[0]
                    n = self.retries.get(task.run_id, 0) + 1
                    self.retries[task.run_id] = n
                    if n > self.max_retries:
                        outcomes.append(Outcome.lost(task, f"the worker process running it died ({n} times)"))
                    else:
                        self.submit(task)
                else:
                    self.suspects.extend(lost)
        if not self.futures:
            if self.suspects:
                self.isolating = True
                self.submit(self.suspects.pop(0))
            else:
                self.isolating = False
        return outcomes

    def close(self) -> None:
        if not self.futures:  # the normal end: let the workers exit on their own
            self.pool.shutdown(wait=True)
            return
        # Interrupted with runs in flight: stop them now rather than leave them running behind the user's back
        # (each resumes from its checkpoint next time).
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            if proc.is_alive():
                proc.terminate()
        for proc in processes:
            proc.join(timeout=5)
        self.futures.clear()


class RayBackend:
    """The same tasks as Ray remote tasks. A task whose worker or node is lost is retried by Ray
    (``max_retries``); the retry resumes from the run's checkpoint. The output directory must be on a
    file system every node sees (run directories hold the checkpoints and the pruned topologies)."""

    def __init__(self, address: str | None, max_retries: int = 3) -> None:
        try:
            import ray
        except ImportError:
            raise UserError("--backend ray needs Ray: pip install 'sparsetopo[ray]'") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            try:
                ray.init(address=address, **kwargs)
            except ConnectionError as exc:
                raise UserError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
            self.started = True
        self.remote = ray.remote(max_retries=max_retries, retry_exceptions=False)(execute)
        self.refs: dict[Any, Task] = {}
        self.jobs = 1

    def capacity(self, threads: int) -> int:
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        return max(1, cpus // max(1, threads))

    def accepts(self) -> bool:
        return len(self.refs) < self.jobs

    def submit(self, task: Task) -> None:
        gpus = 1 if str(task.params.get("device", "cpu")).startswith("cuda") else 0
        self.refs[self.remote.options(num_cpus=task.threads, num_gpus=gpus).remote(task)] = task

    def in_flight(self) -> int:
        return len(self.refs)

    def poll(self, timeout: float) -> list[Outcome]:
        if not self.refs:
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        outcomes = []
        for ref in ready:
            task = self.refs.pop(ref)
            try:
                outcomes.append(self.ray.get(ref))
            except Exception as exc:  # retries exhausted, or the cluster went away
                outcomes.append(Outcome.lost(task, f"Ray task failed: {type(exc).__name__}: {exc}"))
        return outcomes

    def close(self) -> None:
        for ref in list(self.refs):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # pragma: no cover - best effort
                pass
        self.refs.clear()
        if self.started:
            self.ray.shutdown()


def plan(experiments: Iterable[Experiment], only: Iterable[Filter] = ()) -> list[RunSpec]:
    """Every run of the experiments (those matching ``only`` and what they need), each once, dependencies
    first."""
    seen: dict[str, RunSpec] = {}
    for exp in experiments:
        for spec in exp.runs:
            first = seen.setdefault(spec.id, spec)
            if first is not spec:  # another experiment's run: keep the snapshots both ask for
                seen[spec.id] = replace(first, params=merge_run_options(first.params, spec.params))
    return select(order_runs(seen.values()), only)


def _eta(t0: float, done: int, left: int) -> str:
    if done <= 0:
        return f"{left} left"
    seconds = (time.time() - t0) / done * left
    return f"{left} left, about {seconds / 60:.1f} min to go" if left else "all done"


def _status_line(state: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in state.items())


def run_sweep(experiments: Iterable[Experiment], out: str | Path, *, jobs: int | None = None,
              backend: str = "local", ray_address: str | None = None, run_fn: str = DEFAULT_RUN_FN,
              data_dir: str | None = None, checkpoint_every: int | None = None, max_retries: int = 2,
              progress: bool | None = None, poll_seconds: float = 1.0, only: Iterable[Filter] = ()) -> SweepResult:
    """Run every run of ``experiments`` not yet done in ``out`` (only those matching ``only`` and the runs
    they need, when given); returns the counts.

    ``jobs`` runs at a time (local default: as many as fit the cores at each run's own ``threads``; Ray
    default: the cluster's CPUs likewise). Every run gets the data root this process resolves (``data_dir``,
    else ``$SPARSETOPO_DATA``, else the cache), so workers on other machines read the same one.
    ``progress`` None shows a live bar on a terminal and one line per finished run otherwise; False is
    silent.
    """
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r} is not allowed; choose one of: {', '.join(BACKENDS)}")
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs {jobs} is invalid: must be >= 1")
    experiments = list(experiments)
    specs = plan(experiments, only)
    out = Path(out)
    runs_dir = out / "runs"
    t0 = time.time()
    result = SweepResult(total=len(specs))
    with FolderLock(out, "sweep"):
        runs_dir.mkdir(parents=True, exist_ok=True)
        rebuild(out)  # a published folder without its store: keep the experiments registered there
        store = ResultsStore(out)
        try:
            _sweep(experiments, specs, store, runs_dir, result, t0, jobs=jobs, backend=backend,
                   ray_address=ray_address, run_fn=run_fn, max_retries=max_retries, progress=progress,
                   poll_seconds=poll_seconds,
                   options={"data_dir": str(resolve_root(data_dir).absolute()), "checkpoint_every": checkpoint_every})
        finally:
            store.close()
    result.wall_seconds = time.time() - t0
    return result


def visible_gpus() -> tuple[str, ...]:
    """The CUDA devices this process sees, as ``CUDA_VISIBLE_DEVICES`` entries (none without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return ()
    count = torch.cuda.device_count()
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in given.split(",") if d.strip()] if given else [str(i) for i in range(count)]
    return tuple(ids[:count])


def gpu_placement(specs: list[RunSpec]) -> tuple[str, ...]:
    """The GPUs to spread local workers over: every visible one when there are several and a run may use
    CUDA (``--device auto`` or ``cuda``) without naming an index (``cuda:N`` keeps its own numbering)."""
    gpus = visible_gpus()
    if len(gpus) < 2:
        return ()
    devices = [describe(s.command, s.params).get("device") for s in specs]
    devices = [d for d in devices if d is not None and d.kind in ("auto", "cuda")]
    if not devices or any(d.index is not None for d in devices):
        return ()
    return gpus


def _threads(spec: RunSpec) -> int:
    return int(spec.params.get("threads") or 1)


RESTORE = ".restore"
RESTORED = "restored.json"


def weights_needed(spec: RunSpec, dep: str) -> str | None:
    """The weight file of finished run ``dep`` that ``spec`` reads: ``checkpoint.pt`` for a one-shot prune
    of it, ``weights-stepN.pt`` for a rewind to it; None when ``spec`` reads only its published files."""
    ref = token(dep)
    if spec.command == "prune" and spec.params.get("method") == "oneshot" and ref in str(spec.params.get("from_run")):
        return CHECKPOINT
    init = str(spec.params.get("init") or "")
    if init.startswith("rewind:") and ref in init:
        step = init.rpartition("@")[2] if "@" in init.removeprefix("rewind:") else "0"
        return snapshot_path(Path(), int(step) if step.isdigit() else 0).name
    return None


def _prepare_restore(runs_dir: Path, spec: RunSpec) -> Path:
    """``DIR/runs/.restore``, holding a link to each run ``spec`` names, so that its ``{run:ID}`` references
    find them there as they do beside its own directory."""
    root = runs_dir / RESTORE
    root.mkdir(exist_ok=True)
    for dep in spec.deps:
        link = root / dep
        if not link.exists() and not link.is_symlink():
            link.symlink_to(Path("..") / dep, target_is_directory=True)
    return root


def _adopt_weights(runs_dir: Path, spec: RunSpec, outcome: Outcome, files: set[str]) -> str | None:
    """Move the weights of the run trained again in ``.restore`` into its published directory and record
    how it compares; returns why that failed, or None."""
    scratch = runs_dir / RESTORE / spec.id
    home = runs_dir / spec.id
    if outcome.status != RunStatus.COMPLETED:
        return f"training it again ended {outcome.status}: {(outcome.error or '').splitlines()[0] if outcome.error else ''}"
    missing = sorted(f for f in files if not (scratch / f).exists())
    if missing:
        return f"training it again wrote no {', '.join(missing)}"
    published = json.loads((home / "summary.json").read_text()) if (home / "summary.json").exists() else {}
    same = ((home / "metrics.jsonl").exists() and (scratch / "metrics.jsonl").exists()
            and (home / "metrics.jsonl").read_bytes() == (scratch / "metrics.jsonl").read_bytes())
    moved = sorted(p.name for p in scratch.iterdir() if p.name == CHECKPOINT or p.name.startswith("weights-step"))
    for name in moved:
        os.replace(scratch / name, home / name)
    atomic_write_json(home / RESTORED, {
        "restored": moved, "same_metrics": same,
        "published_final_test_accuracy": published.get("final_test_accuracy"),
        "restored_final_test_accuracy": outcome.summary.get("final_test_accuracy"),
        "machine": outcome.summary.get("machine"), "restored_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    shutil.rmtree(scratch, ignore_errors=True)
    return None


def _sweep(experiments: list[Experiment], specs: list[RunSpec], store: ResultsStore, runs_dir: Path,
           result: SweepResult, t0: float, *, jobs: int | None, backend: str, ray_address: str | None, run_fn: str,
           max_retries: int, progress: bool | None, poll_seconds: float, options: dict[str, Any]) -> None:
    for exp in experiments:
        store.register_experiment(exp)
    store.export_registry(runs_dir.parent / REGISTRY)
    store.import_finished(runs_dir, [s.id for s in specs])  # finished runs whose records are not here
    known = store.statuses([s.id for s in specs])
    state: dict[str, RunStatus] = {rid: RunStatus(st) for rid, st in known.items() if RunStatus(st).finished}
    pending = [s for s in specs if s.id not in state]
    result.skipped = len(specs) - len(pending)
    by_id = {s.id: s for s in specs}
    to_restore: dict[str, set[str]] = {}  # finished runs whose weights a pending run needs, not here
    for spec in pending:
        for dep in spec.deps:
            need = weights_needed(spec, dep) if state.get(dep) == RunStatus.COMPLETED and dep in by_id else None
            if need and not (runs_dir / dep / need).exists():
                to_restore.setdefault(dep, set()).add(need)
    restoring: dict[str, set[str]] = {}
    unrestorable: dict[str, str] = {}
    if pending and run_fn == DEFAULT_RUN_FN:  # every dataset there, or one error, before any run starts
        ensure_datasets(sorted({d for d in (describe(s.command, s.params).get("dataset") for s in pending)
                                if not is_factory(d)}), options["data_dir"])  # a user's dataset factory loads itself
    widest = max((_threads(s) for s in pending), default=1)
    runner: Backend
    if backend == "ray":
        ray_backend = RayBackend(ray_address, max_retries=max_retries)
        ray_backend.jobs = jobs or ray_backend.capacity(widest)
        runner = ray_backend
    else:
        jobs = jobs or max(1, available_cores() // widest)
        runner = (LocalBackend(jobs, max_retries=max_retries, gpus=gpu_placement(pending)) if pending
                  else _NoBackend())
    tty = sys.stderr.isatty()
    show_bar = progress if progress is not None else tty
    log_lines = progress is None and not tty
    bar = tqdm(total=len(specs), initial=result.skipped, unit="run", desc="sweep", disable=not show_bar,
               dynamic_ncols=True, file=sys.stderr)
    counts = {"running": 0, **{s.value: 0 for s in (RunStatus.FAILED, RunStatus.DIVERGED, RunStatus.BLOCKED)}}
    finished = result.skipped
    try:
        while pending or runner.in_flight():
            for dep in list(to_restore):
                if not runner.accepts():
                    break
                spec = by_id[dep]
                runner.submit(make_task(dep, spec.command, spec.params, _prepare_restore(runs_dir, spec),
                                        run_fn=run_fn, threads=_threads(spec), options=options))
                restoring[dep] = to_restore.pop(dep)
                if show_bar or log_lines:
                    bar.write(f"sweep: {dep} ({spec.experiment}/{spec.stage}) finished, but not its weights "
                              f"({', '.join(sorted(restoring[dep]))}), which a later run needs: training it again in "
                              f"{RESTORE}/", file=sys.stderr)
            for spec in list(pending):
                bad = [d for d in spec.deps if state.get(d) in (RunStatus.DIVERGED, RunStatus.FAILED, RunStatus.BLOCKED)]
                lost = [d for d in spec.deps if d in unrestorable]
                if bad or lost:
                    why = "; ".join(
                        ([f"needs run(s) that did not complete: {', '.join(f'{d} ({state[d]})' for d in bad)}"] if bad else [])
                        + [f"needs the weights of {d}, not in its directory: {unrestorable[d]}" for d in lost])
                    store.record_run(spec.id, spec.command, spec.hparams, RunStatus.BLOCKED, error=why)
                    state[spec.id] = RunStatus.BLOCKED
                    pending.remove(spec)
                    result.blocked += 1
                    counts[RunStatus.BLOCKED.value] += 1
                    finished += 1
                    bar.update(1)
                    continue
                if not runner.accepts():
                    continue
                if all(state.get(d) == RunStatus.COMPLETED and d not in restoring and d not in to_restore
                       for d in spec.deps):
                    runner.submit(make_task(spec.id, spec.command, spec.params, runs_dir, run_fn=run_fn,
                                            threads=_threads(spec), options=options))
                    pending.remove(spec)
            if not runner.in_flight():
                if pending:  # cannot happen with a dependency-ordered plan; never spin
                    raise UserError("runs left whose dependencies are not part of the sweep: "
                                    + ", ".join(s.id for s in pending))
                break
            counts["running"] = runner.in_flight()
            bar.set_postfix_str(_status_line(counts), refresh=True)
            for oc in runner.poll(poll_seconds):
                spec = by_id[oc.run_id]
                if oc.run_id in restoring:  # a finished run trained again for its weights: not a result
                    why = _adopt_weights(runs_dir, spec, oc, restoring.pop(oc.run_id))
                    if why:
                        unrestorable[oc.run_id] = why
                        bar.write(f"sweep: the weights of {oc.run_id} could not be restored: {why}", file=sys.stderr)
                    elif show_bar or log_lines:
                        bar.write(f"sweep: restored the weights of {oc.run_id} (see its {RESTORED})", file=sys.stderr)
                    continue
                status = oc.status
                store.record_run(spec.id, spec.command, spec.hparams, status, summary=oc.summary,
                                 metrics=oc.metrics, error=oc.error, started_at=oc.started_at,
                                 finished_at=oc.finished_at, cpu_seconds=oc.cpu_seconds)
                state[spec.id] = status
                setattr(result, status.value, getattr(result, status.value) + 1)
                if status.value in counts:
                    counts[status.value] += 1
                if status == RunStatus.FAILED:
                    result.failures.append((spec.id, str(oc.error)))
                    bar.write(f"sweep: run {spec.id} ({spec.experiment}/{spec.stage}) failed: "
                              f"{str(oc.error).splitlines()[0] if oc.error else ''}", file=sys.stderr)
                elif log_lines:
                    acc = oc.summary.get("final_test_accuracy")
                    acc_text = f", test accuracy {acc:.4f}" if isinstance(acc, (int, float)) else ""
                    print(f"sweep: [{finished + 1}/{len(specs)}] {spec.id} ({spec.experiment}/{spec.stage}) "
                          f"{status}{acc_text}; {_eta(t0, finished + 1 - result.skipped, len(specs) - finished - 1)}",
                          file=sys.stderr, flush=True)
                finished += 1
                bar.update(1)
            counts["running"] = runner.in_flight()
            bar.set_postfix_str(_status_line(counts), refresh=False)
    finally:
        bar.close()
        runner.close()


class _NoBackend:
    """Nothing to run: no worker processes are started."""

    def accepts(self) -> bool:  # pragma: no cover - never asked
        return False

    def submit(self, task: Task) -> None:  # pragma: no cover - never called
        raise AssertionError("nothing to submit")

    def poll(self, timeout: float) -> list[Outcome]:
        return []

    def in_flight(self) -> int:
        return 0

    def close(self) -> None:
        pass
