"""What a sweep will run and roughly how long it will take, from the timings of finished runs."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import statistics
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any, NamedTuple

from tqdm import tqdm

from sparsetopo.desc.identity import RUN_TOKEN, RunDesc
from sparsetopo.desc.status import RunStatus
from sparsetopo.errors import UserError
from sparsetopo.experiments.results import DB_NAME, ResultsStore, rebuild
from sparsetopo.experiments.runner import plan
from sparsetopo.experiments.spec import Experiment, Filter, RunSpec
from sparsetopo.experiments.worker import execute, make_task
from sparsetopo.runs import OPTION_KEYS, describe
from sparsetopo.system import available_cores
from sparsetopo.topology.spec import Scale, parse_scale
from sparsetopo.training.hparams import TRAIN_GROUPS, DataHparams, TrainHparams
from sparsetopo.training.run import steps_per_epoch


def budget_steps(desc: RunDesc) -> int:
    """The training steps of a run (0 for one-shot pruning, which only evaluates)."""
    if desc.kind == "prune" and desc.get("method") == "oneshot":
        return 0
    return desc.group(TrainHparams).total_steps(steps_per_epoch(desc.group(DataHparams)))


def evaluations(desc: RunDesc) -> int:
    """The test-set evaluations of a run: one every ``eval_every`` steps (default: each epoch) and one at the
    end; one-shot pruning evaluates the dense and the pruned network."""
    if desc.kind == "prune" and desc.get("method") == "oneshot":
        return 2
    total = budget_steps(desc)
    every = desc.group(TrainHparams).eval_every or steps_per_epoch(desc.group(DataHparams))
    return total // every + (1 if total % every else 0)


def cost_key(desc: RunDesc) -> tuple:
    """Runs with the same key cost about the same per step."""
    scale = desc.get("scale")
    return (desc.get("model"), desc.get("dataset"), str(scale) if scale is not None else None,
            desc.get("topology").kind, desc.kind == "prune" and desc.get("method") == "oneshot",
            desc.get("backend"))


def _scale_k(scale: str | Scale | None) -> tuple[str, float]:
    """('connections', K) or ('neurons', F) of a cost key's scale; no scale is connections:1."""
    parsed = parse_scale(scale)
    return (parsed.kind, parsed.value) if parsed is not None else ("connections", 1.0)


class Cost(NamedTuple):
    """CPU seconds of a run: ``fixed`` per run, ``step`` per training step, ``evaluation`` per test-set pass
    (0 where the timings do not split evaluations off: their share is then in ``step``)."""

    fixed: float
    step: float
    evaluation: float = 0.0

    def of(self, desc: RunDesc) -> float:
        return self.fixed + self.step * budget_steps(desc) + self.evaluation * evaluations(desc)

    def scaled(self, factor: float) -> Cost:
        """The per-step and per-evaluation costs times ``factor`` (a wider or narrower network)."""
        return Cost(self.fixed, self.step * factor, self.evaluation * factor)


def _median(costs: list[Cost]) -> Cost:
    return Cost(*(statistics.median(c[i] for c in costs) for i in range(3)))


def fallback(key: tuple, known: dict[tuple, Cost]) -> Cost | None:
    """A cost for a key without timings, from runs of the same model, dataset and kind: fixed-neuron runs
    cost what the nearest measured density costs (masked layers keep their dense shapes); fixed-connection
    runs are interpolated (or extrapolated) linearly in K from the measured widths, dense counting as
    K = 1 (a run on a pruned topology costs what the dense network costs)."""
    model, dataset, scale, _, oneshot, backend = key
    kind, value = _scale_k(scale)
    same = [(_scale_k(k[2]), c) for k, c in known.items()
            if (k[0], k[1], k[4], k[5]) == (model, dataset, oneshot, backend)]
    if not same:
        return None
    if kind == "neurons":
        pts = [(v, c) for (kd, v), c in same if kd == "neurons"] or [(1.0, c) for (kd, v), c in same if v == 1.0]
        return min(pts, key=lambda p: abs(p[0] - value))[1] if pts else None
    per_k: dict[float, list[Cost]] = defaultdict(list)
    for (kd, v), c in same:
        if kd == "connections":
            per_k[v].append(c)
    pts = sorted((v, _median(cs)) for v, cs in per_k.items())
    if not pts:
        return None
    ks = [k for k, _ in pts]
    if value in ks:
        return pts[ks.index(value)][1]
    if ks == [1.0]:  # only the dense width here: scale it as the same model scales on another dataset
        for other in {k[1] for k in known if k[0] == model and k[1] != dataset}:
            base = fallback((model, other, None, "dense", oneshot, backend), known)
            wide = fallback((model, other, scale, "random", oneshot, backend), known)
            if base and wide and base.step > 0 and value in {
                    _scale_k(k[2])[1] for k in known if k[:2] == (model, other) and _scale_k(k[2])[0] == kind}:
                c0 = pts[0][1]
                fixed = c0.fixed * wide.fixed / base.fixed if base.fixed else c0.fixed
                return Cost(fixed, c0.step * wide.step / base.step, c0.evaluation * wide.step / base.step)
    if len(pts) == 1 or value < ks[0]:
        k0, c0 = pts[0]
        return c0.scaled(value / k0)
    lo = max(i for i, k in enumerate(ks) if k < value) if value < ks[-1] else len(ks) - 2
    (k1, c1), (k2, c2) = pts[lo], pts[lo + 1]
    t = (value - k1) / (k2 - k1)
    step = max(c1.step + (c2.step - c1.step) * t, min(c1.step, c2.step))
    evaluation = max(c1.evaluation + (c2.evaluation - c1.evaluation) * t, min(c1.evaluation, c2.evaluation))
    return Cost(c1.fixed if abs(value - k1) < abs(value - k2) else c2.fixed, step, evaluation)


class _Timed(NamedTuple):
    steps: int
    evaluations: int
    cpu: float  # the run's CPU seconds
    eval_cpu: float | None  # the part spent evaluating, where the run recorded it


def fit_costs(runs: list[_Timed]) -> Cost:
    """One key's cost from its timed runs. Where runs split off their evaluation time, an evaluation costs
    the median per pass and the rest is the training's; a straight line through (steps, CPU seconds) where
    runs of several lengths exist (so loading the data, building the model and warming up are not charged
    per step), else the cost per step of the runs."""
    split = [r for r in runs if r.eval_cpu]
    if split:
        evaluation = statistics.median(r.eval_cpu / max(r.evaluations, 1) for r in split)  # type: ignore[operator]
        pts = [(r.steps, r.cpu - r.eval_cpu) for r in split]  # type: ignore[operator]
    else:
        evaluation, pts = 0.0, [(r.steps, r.cpu) for r in runs]
    if not any(n for n, _ in pts):
        return Cost(statistics.median(c for _, c in pts), 0.0, evaluation)
    if len({n for n, _ in pts}) > 1:
        slope, intercept = _line(pts)
        if slope > 0:
            return Cost(max(intercept, 0.0), slope, evaluation)
    return Cost(0.0, statistics.median(c / n for n, c in pts if n), evaluation)


def timings(results_dir: str | Path) -> dict[tuple, Cost]:
    """The cost of each cost key, fitted (:func:`fit_costs`) over the finished runs in ``results_dir``.

    CPU time (all threads of the run's process) measures the work whatever else the machine was doing;
    runs recorded without it fall back to their wall time."""
    db = Path(results_dir) / DB_NAME
    rebuild(results_dir)  # a published folder: its registry and run directories, no store
    if not db.exists():
        return {}
    store = ResultsStore(db)
    try:
        rows = store.runs()
    finally:
        store.close()
    per: dict[tuple, list[_Timed]] = defaultdict(list)
    for r in rows:
        cost = r.get("cpu_seconds") or r["wall_seconds"]
        if not RunStatus(r["status"]).finished or not cost:
            continue
        desc = describe(r["command"], r["hparams"])
        eval_cpu = (r.get("summary") or {}).get("eval_cpu_seconds") if r.get("cpu_seconds") else None
        per[cost_key(desc)].append(_Timed(budget_steps(desc), evaluations(desc), cost, eval_cpu))
    return {key: fit_costs(runs) for key, runs in per.items()}


def _line(pts: list[tuple[int, float]]) -> tuple[float, float]:
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return slope, my - slope * mx


PROBE_STEPS = 40


def probe_params(spec: RunSpec, by_id: dict[str, RunSpec], steps: int) -> dict[str, Any]:
    """A short training run that costs per step and per evaluation what ``spec`` costs: its model, data,
    width, backend and threads, ``steps`` steps and one evaluation at the end. Gradual pruning becomes the
    dense training it prunes; a structure read from a run not made yet (``file:{run:ID}/...``) becomes a
    random one at the density that run prunes to; other references to runs are left out."""
    train_fields = {f.name for cls in TRAIN_GROUPS for f in fields(cls)}
    params = {k: v for k, v in spec.params.items() if k in train_fields and k not in OPTION_KEYS}
    if RUN_TOKEN.search(str(params.get("topology", ""))):
        sparsity = _source_sparsity(spec, by_id)
        params["topology"] = f"random:density={1 - sparsity:.6g}" if sparsity else "dense"
    params = {k: v for k, v in params.items() if not RUN_TOKEN.search(str(v))}
    params.pop("epochs", None)
    return {**params, "steps": steps, "eval_every": steps}


def _source_sparsity(spec: RunSpec, by_id: dict[str, RunSpec]) -> float:
    """The sparsity of the pruning run whose structure ``spec`` trains on (0 when it reads none)."""
    match = RUN_TOKEN.search(str(spec.params.get("topology", "")))
    source = by_id.get(match.group(1)) if match else None
    return float(source.params.get("sparsity") or 0.0) if source is not None else 0.0


def _import_torch() -> None:
    import sparsetopo.runs  # noqa: F401  (torch and the kernels, before any probe's clock starts)


def probe_timings(specs: list[RunSpec], *, steps: int = PROBE_STEPS, data_dir: str | None = None,
                  progress: bool = True) -> tuple[dict[tuple, Cost], list[str]]:
    """Measure each cost key of ``specs`` here and now: two short runs of :func:`probe_params` (``steps``
    and ``2 * steps`` steps), each alone in a fresh process, give the cost of a step (their difference),
    of an evaluation (what each recorded) and of a run's start (data, model, warm-up; the rest). Each kind
    is represented by its run of median structure sparsity (retraining on pruned structures of several
    sparsities is one kind). One-shot pruning costs the start and two evaluations of the network it prunes. Returns the costs and a line
    for each key that could not be measured."""
    from sparsetopo.data.files import resolve_root

    if steps < 1:
        raise UserError(f"--probe-steps {steps} is invalid: must be >= 1")
    by_id = {s.id: s for s in specs}
    members: dict[tuple, list[RunSpec]] = {}
    for s in specs:
        members.setdefault(cost_key(describe(s.command, s.params)), []).append(s)
    # a key's runs may differ in what a retraining run's structure keeps: probe the median one
    reps = {key: sorted(group, key=lambda s: _source_sparsity(s, by_id))[len(group) // 2]
            for key, group in members.items()}
    trained = {k: s for k, s in reps.items() if not k[4]}
    root = str(resolve_root(data_dir).absolute())
    costs: dict[tuple, Cost] = {}
    failed: list[str] = []
    ctx = multiprocessing.get_context("spawn")
    bar = tqdm(total=2 * len(trained), desc="probe", unit="run", disable=not progress, leave=False)
    with tempfile.TemporaryDirectory(prefix="sparsetopo-probe-") as tmp:
        for i, (key, spec) in enumerate(trained.items()):
            outcomes = []
            for n in (steps, 2 * steps):
                task = make_task(f"probe-{i}-{n}", "train", probe_params(spec, by_id, n), tmp,
                                 options={"data_dir": root})
                with cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=_import_torch) as pool:
                    outcomes.append(pool.submit(execute, task).result())
                bar.update(1)
            bad = next((o for o in outcomes if not o.status.finished), None)
            if bad is not None:
                failed.append(f"{_name(key)}: {(bad.error or bad.status).splitlines()[0]}")
                continue
            (a, b) = outcomes
            loop_a = a.summary["cpu_seconds"] - a.summary["eval_cpu_seconds"]
            loop_b = b.summary["cpu_seconds"] - b.summary["eval_cpu_seconds"]
            step = (loop_b - loop_a) / steps
            if step <= 0:  # noise larger than the steps' cost: charge the longer run's loop per step
                step = loop_b / (2 * steps)
            evaluation = (a.summary["eval_cpu_seconds"] + b.summary["eval_cpu_seconds"]) / 2
            fixed = statistics.median(o.cpu_seconds - step * n - o.summary["eval_cpu_seconds"]  # type: ignore[operator]
                                      for o, n in ((a, steps), (b, 2 * steps)))
            costs[key] = Cost(max(fixed, 0.0), step, evaluation)
    bar.close()
    for key in reps:
        if key[4]:
            base = costs.get(key[:4] + (False,) + key[5:])
            if base is not None:
                costs[key] = Cost(base.fixed, 0.0, base.evaluation)
    return costs, failed


def finished_ids(out: str | Path) -> set[str]:
    """The runs recorded as finished (completed or diverged) in ``out``'s results store; none without one."""
    db = Path(out) / DB_NAME
    if not db.exists():
        return set()
    with ResultsStore(db) as store:
        return {rid for rid, st in store.statuses().items() if RunStatus(st).finished}


def _name(key: tuple) -> str:
    return f"{key[0]}/{key[1]}" + (f"/{key[2]}" if key[2] else "") + f"/{key[3]}" + ("/one-shot" if key[4] else "")


def describe_plan(experiments: Iterable[Experiment], out: str | Path,
                  estimate_from: str | Path | None = None, only: Iterable[Filter] = (), *,
                  probe: int | None = None, data_dir: str | None = None, progress: bool = True) -> str:
    """What a sweep of ``experiments`` into ``out`` will run, and its estimated cost: from the timings of
    finished runs (in ``estimate_from``, else ``out``), or with ``probe`` (steps) from short runs of every
    kind of run measured here first (:func:`probe_timings`)."""
    experiments = list(experiments)
    specs: list[RunSpec] = plan(experiments, only)
    lines = []
    for exp in experiments:
        stages = Counter(stage for stage, _ in exp.memberships)
        lines.append(f"{exp.name} (profile {exp.profile}): {len(exp.runs)} runs: "
                     + ", ".join(f"{s} {n}" for s, n in stages.items()))
    failed: list[str] = []
    if probe is not None:
        known, failed = probe_timings(specs, steps=probe, data_dir=data_dir, progress=progress)
        source = f"probes measured here ({probe} and {2 * probe} steps of each kind of run, one at a time)"
    else:
        known = timings(estimate_from or out)
        source = f"the timings in {estimate_from or out}"
    descs = [describe(s.command, s.params) for s in specs]
    total_steps = sum(budget_steps(d) for d in descs)
    done = finished_ids(out)
    seconds, left, longest, unknown, guessed = 0.0, 0.0, 0.0, Counter(), Counter()
    per_key: dict[str, list[Any]] = {}
    for spec, desc in zip(specs, descs):
        key = cost_key(desc)
        name = _name(key)
        cost = known.get(key)
        if cost is None:
            cost = fallback(key, known)
            (guessed if cost is not None else unknown)[name] += 1
        if cost is not None:
            run_seconds = cost.of(desc)
            seconds += run_seconds
            longest = max(longest, run_seconds)
            left += 0.0 if spec.id in done else run_seconds
            row = per_key.setdefault(name, [0, 0.0, cost])
            row[0] += 1
            row[1] += run_seconds
    lines.append(f"{len(specs)} distinct runs, {total_steps:,} training steps in all")
    cores = available_cores()
    if known:
        wall = max(seconds / cores, longest)
        lines.append(f"estimated compute from {source}: {seconds / 3600:.2f} CPU-hours (~{wall / 3600:.2f} h of wall "
                     f"time on {cores} such cores, if nothing else runs; the longest run {longest / 3600:.2f} h)")
        n_done = sum(s.id in done for s in specs)
        if n_done:
            lines.append(f"{n_done} of the runs are finished in {out}; the other {len(specs) - n_done}: "
                         f"{left / 3600:.2f} CPU-hours (~{left / cores / 3600:.2f} h on {cores} cores)")
        lines.append("by kind of run (CPU seconds: per run's start, per step, per evaluation):")
        for name, (n, total, cost) in sorted(per_key.items(), key=lambda kv: -kv[1][1]):
            lines.append(f"  {name}: {n} runs, {total / 3600:.2f} CPU-h ({cost.fixed:.1f} s + {cost.step * 1000:.1f} ms"
                         f" + {cost.evaluation:.2f} s)")
        if guessed:
            lines.append("extrapolated from other widths for: "
                         + ", ".join(f"{k} ({n} runs)" for k, n in sorted(guessed.items())))
        if unknown:
            lines.append("no timing for (left out): "
                         + ", ".join(f"{k} ({n} runs)" for k, n in sorted(unknown.items())))
    elif probe is not None:
        lines.append("no kind of run could be probed, so there is no estimate (why: below)")
    else:
        lines.append("no finished runs to estimate from (use --estimate-from DIR with the results of a smaller sweep, "
                     "or --probe)")
    lines.extend(f"probe failed for {line}" for line in failed)
    return "\n".join(lines)
