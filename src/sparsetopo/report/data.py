"""The report's view of a results store: runs with their hyperparameters, roles and metrics."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sparsetopo.desc.identity import RUN_TOKEN, RunDesc
from sparsetopo.desc.status import RunStatus
from sparsetopo.errors import UserError
from sparsetopo.experiments.results import DB_NAME, ResultsStore, rebuild
from sparsetopo.runs import describe

SEED_KEYS = ("seed", "data_seed")
# Options that never tell two configurations apart in a table (where the files are, run references).
NOT_A_SETTING = frozenset({"data_dir", "checkpoint_every", "from_run", "eval_every"})


@dataclass
class Run:
    id: str
    command: str
    params: dict[str, Any]
    status: str
    final: float | None
    best: float | None
    pruned: float | None
    steps: int | None
    wall_seconds: float | None
    cpu_seconds: float | None
    summary: dict[str, Any]
    error: str | None
    stages: list[str] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @cached_property
    def desc(self) -> RunDesc:
        """The run's description, parsed from its hyperparameters as the CLI would parse them."""
        return describe(self.command, self.params)

    @cached_property
    def _values(self) -> dict[str, Any]:
        return self.desc.to_dict()

    def get(self, key: str) -> Any:
        """Option ``key`` in its canonical JSON form (``random:density=1/10`` reads as ``random:density=0.1``)."""
        return self._values.get(key, self.params.get(key))

    @property
    def parent(self) -> str | None:
        """The run whose topology (or weights) this run trains on, if any."""
        for key in ("topology", "init", "from_run"):
            value = self.params.get(key)
            if isinstance(value, str):
                m = RUN_TOKEN.search(value)
                if m:
                    return m.group(1)
        return None

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.COMPLETED

    @property
    def finished(self) -> bool:
        """Completed or diverged: a run with a result to show."""
        return RunStatus(self.status).finished


def sparsity_of(run: Run) -> float | None:
    """The nominal sparsity of a run's sparse layers: the prune target, the scale, the topology spec's
    density, else the measured sparsity of the layers that are not dense."""
    desc = run.desc
    if desc.kind == "prune":
        return desc.get("sparsity")
    scale, topo = desc.get("scale"), desc.get("topology")
    if scale is not None:
        return 1.0 - scale.density
    if topo.kind == "dense":
        return 0.0
    if topo.density is not None:
        return 1.0 - topo.density
    layers = run.summary.get("layers", [])
    flagged = [layer for layer in layers if layer.get("sparse")]
    layers = flagged or [layer for layer in layers if layer.get("density", 1.0) < 1.0]
    if layers:
        size = sum(_size(layer) for layer in layers)
        nnz = sum(int(layer.get("nnz", 0)) for layer in layers)
        if size > 0:
            return round(1.0 - nnz / size, 4)
    return None


def _size(layer: dict[str, Any]) -> int:
    n = 1
    for d in layer.get("shape", []):
        n *= int(d)
    return n


def topology_family(run: Run) -> str:
    """dense, random, radix or file."""
    return str(run.desc.get("topology").kind)


def regime_of(run: Run) -> str:
    """'connections' (fixed connections, widened), 'neurons' (fixed neurons) or 'dense'."""
    scale = run.desc.get("scale")
    dense = topology_family(run) == "dense"
    if scale is not None and scale.kind == "connections":
        return "dense" if scale.value == 1 and dense else "connections"
    if scale is not None:
        return "neurons"
    return "dense" if dense else "neurons"


def label(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ReportData:
    """Every run of a results directory, loaded once."""

    def __init__(self, results_dir: str | Path) -> None:
        path = Path(results_dir)
        if path.is_dir():
            rebuild(path)  # a published folder: the registry and the run directories, no store
        db = path / DB_NAME if path.is_dir() else path
        if not db.exists():
            raise UserError(f"{results_dir}: no {DB_NAME} here; give the --out directory of a sweep")
        self.dir = db.parent
        store = ResultsStore(db)
        try:
            self.experiments = store.experiments()
            rows = store.runs()
            self.runs: dict[str, Run] = {}
            for r in rows:
                self.runs[r["id"]] = Run(
                    id=r["id"], command=r["command"], params=r["hparams"], status=r["status"],
                    final=r["final_test_accuracy"], best=r["best_test_accuracy"], pruned=r["pruned_test_accuracy"],
                    steps=r["steps"], wall_seconds=r["wall_seconds"], cpu_seconds=r.get("cpu_seconds"),
                    summary=r["summary"], error=r["error"])
            self.members: dict[str, list[tuple[str, str]]] = {}
            for exp in self.experiments:
                pairs = store.memberships(exp["name"])
                self.members[exp["name"]] = pairs
                for stage, rid in pairs:
                    if rid in self.runs:
                        self.runs[rid].stages.append(f"{exp['name']}/{stage}")
            for rid, run in self.runs.items():
                run.metrics = store.metrics(rid)
        finally:
            store.close()

    def experiment_runs(self, name: str) -> list[Run]:
        seen: list[Run] = []
        for _, rid in self.members.get(name, []):
            run = self.runs.get(rid)
            if run is not None and run not in seen:
                seen.append(run)
        return seen

    def config_key(self, run: Run) -> str:
        """What a run's seeds share: its canonical options without the seeds, a run it builds on standing in
        by that run's own key (so retraining runs on five structures of one kind, each from its own seed,
        are one configuration)."""
        def key(r: Run, depth: int = 0) -> str:
            canon = {k: v for k, v in r.desc.canonical().items() if k not in SEED_KEYS}
            for name, value in canon.items():
                if isinstance(value, str) and depth < 8:
                    for rid in RUN_TOKEN.findall(value):
                        parent = self.runs.get(rid)
                        value = value.replace(f"{{run:{rid}}}", f"<{key(parent, depth + 1)}>" if parent else rid)
                    canon[name] = value
            return json.dumps(canon, sort_keys=True)

        return key(run)

    def parent_of(self, run: Run) -> Run | None:
        pid = run.parent
        return self.runs.get(pid) if pid else None


def varying(runs: Iterable[Run], ignore: Iterable[str] = ()) -> list[str]:
    """The options that take more than one value among ``runs`` (seeds and ``ignore`` left out)."""
    runs = list(runs)
    skip = set(SEED_KEYS) | set(NOT_A_SETTING) | set(ignore)
    keys = sorted({k for r in runs for k in r.params} - skip)
    out = []
    for key in keys:
        values = {repr(r.get(key)) for r in runs}
        if len(values) > 1:
            out.append(key)
    return out
