"""What a sweep will run and roughly how long it will take, from the timings of finished runs."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from sparsetopo.desc.identity import RunDesc
from sparsetopo.desc.status import RunStatus
from sparsetopo.experiments.results import DB_NAME, ResultsStore, rebuild
from sparsetopo.experiments.runner import plan
from sparsetopo.experiments.spec import Experiment, Filter, RunSpec
from sparsetopo.runs import describe
from sparsetopo.system import available_cores
from sparsetopo.topology.spec import Scale, parse_scale
from sparsetopo.training.hparams import DataHparams, TrainHparams
from sparsetopo.training.run import steps_per_epoch


def budget_steps(desc: RunDesc) -> int:
    """The training steps of a run (0 for one-shot pruning, which only evaluates)."""
    if desc.kind == "prune" and desc.get("method") == "oneshot":
        return 0
    return desc.group(TrainHparams).total_steps(steps_per_epoch(desc.group(DataHparams)))


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


Cost = tuple[float, float]  # (CPU seconds per run, CPU seconds per training step)


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
    pts = sorted((v, (statistics.median(c[0] for c in cs), statistics.median(c[1] for c in cs)))
                 for v, cs in per_k.items())
    if not pts:
        return None
    ks = [k for k, _ in pts]
    if value in ks:
        return pts[ks.index(value)][1]
    if ks == [1.0]:  # only the dense width here: scale it as the same model scales on another dataset
        for other in {k[1] for k in known if k[0] == model and k[1] != dataset}:
            base = fallback((model, other, None, "dense", oneshot, backend), known)
            wide = fallback((model, other, scale, "random", oneshot, backend), known)
            if base and wide and base[1] > 0 and value in {
                    _scale_k(k[2])[1] for k in known if k[:2] == (model, other) and _scale_k(k[2])[0] == kind}:
                f0, r0 = pts[0][1]
                return f0 * wide[0] / base[0] if base[0] else f0, r0 * wide[1] / base[1]
    if len(pts) == 1 or value < ks[0]:
        k0, (f0, r0) = pts[0]
        return f0, r0 * value / k0
    lo = max(i for i, k in enumerate(ks) if k < value) if value < ks[-1] else len(ks) - 2
    (k1, (f1, r1)), (k2, (f2, r2)) = pts[lo], pts[lo + 1]
    rate = r1 + (r2 - r1) * (value - k1) / (k2 - k1)
    return (f1 if abs(value - k1) < abs(value - k2) else f2), max(rate, min(r1, r2))


def timings(results_dir: str | Path) -> dict[tuple, Cost]:
    """(CPU seconds per run, CPU seconds per step) by cost key, fitted over finished runs: a straight line
    through (steps, CPU seconds) where runs of several lengths exist (so loading the data, building the
    model and the final evaluation are not charged per step), else the cost per step of the runs.

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
    per: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        cost = r.get("cpu_seconds") or r["wall_seconds"]
        if not RunStatus(r["status"]).finished or not cost:
            continue
        desc = describe(r["command"], r["hparams"])
        per[cost_key(desc)].append((budget_steps(desc), cost))
    out: dict[tuple, Cost] = {}
    for key, pts in per.items():
        steps = [p[0] for p in pts]
        if not any(steps):
            out[key] = (statistics.median(p[1] for p in pts), 0.0)
            continue
        if len(set(steps)) > 1:
            slope, intercept = _line(pts)
            if slope > 0:
                out[key] = (max(intercept, 0.0), slope)
                continue
        out[key] = (0.0, statistics.median(c / n for n, c in pts if n))
    return out


def _line(pts: list[tuple[int, float]]) -> tuple[float, float]:
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return slope, my - slope * mx


def describe_plan(experiments: Iterable[Experiment], out: str | Path,
                  estimate_from: str | Path | None = None, only: Iterable[Filter] = ()) -> str:
    experiments = list(experiments)
    specs: list[RunSpec] = plan(experiments, only)
    lines = []
    for exp in experiments:
        stages = Counter(stage for stage, _ in exp.memberships)
        lines.append(f"{exp.name} (profile {exp.profile}): {len(exp.runs)} runs: "
                     + ", ".join(f"{s} {n}" for s, n in stages.items()))
    known = timings(estimate_from or out)
    descs = [describe(s.command, s.params) for s in specs]
    total_steps = sum(budget_steps(d) for d in descs)
    seconds, unknown, guessed = 0.0, Counter(), Counter()
    for desc in descs:
        key = cost_key(desc)
        name = f"{key[0]}/{key[1]}" + (f"/{key[2]}" if key[2] else "") + f"/{key[3]}" + ("/one-shot" if key[4] else "")
        cost = known.get(key)
        if cost is None:
            cost = fallback(key, known)
            (guessed if cost is not None else unknown)[name] += 1
        if cost is not None:
            seconds += cost[0] + cost[1] * budget_steps(desc)
    lines.append(f"{len(specs)} distinct runs, {total_steps:,} training steps in all")
    cores = available_cores()
    if known:
        lines.append(f"estimated compute from the timings in {estimate_from or out}: {seconds / 3600:.2f} CPU-hours"
                     f" (~{seconds / cores / 3600:.2f} h of wall time on {cores} such cores, if nothing else runs)")
        if guessed:
            lines.append("extrapolated from other widths for: "
                         + ", ".join(f"{k} ({n} runs)" for k, n in sorted(guessed.items())))
        if unknown:
            lines.append("no timing for (left out): "
                         + ", ".join(f"{k} ({n} runs)" for k, n in sorted(unknown.items())))
    else:
        lines.append("no finished runs to estimate from (use --estimate-from DIR with the results of a smaller sweep)")
    return "\n".join(lines)
