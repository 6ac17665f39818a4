"""Experiment files: a TOML grid of runs, with profiles, expanded into a dependency-ordered list of runs.

An experiment file looks like::

    [experiment]
    name = "fig7"                 # the experiment's name in results.db and the report
    kind = "fig7"                 # which report section draws it: fig7 | fig8 | fig9 | lr | ablation | dst | table
    title = "..."
    default_profile = "quick"

    [fixed]                       # options of every run
    dataset = "mnist"

    [stages.dense]                # one stage = one command over a grid
    command = "train"
    axes = { model = ["lenet300", "lenet5"], seed = [0] }

    [stages.oneshot]
    command = "prune"
    parent = "dense"              # one run per run of stage 'dense' x this stage's own grid
    inherit = ["model", "seed"]   # options copied from the parent run
    fixed = { method = "oneshot", from_run = "{parent}" }
    axes = { sparsity = [0.5, 0.9] }

    [profiles.smoke]              # a profile overlays the file (tables merge, other values replace)
    fixed = { steps = 300 }
    stages.oneshot.axes.sparsity = [0.9]

    [profiles.paper]              # the file as written

A stage's runs are: for each parent run (or once, without ``parent``), for each case of ``cases`` (a list
of tables; a list value inside a case is an axis of that case), the product of ``axes`` (in file order).
Option values merge as ``[fixed]`` < inherited < stage ``fixed`` < case < axes. ``{parent}`` in a value is
the parent run (its directory when the run executes), so one-shot pruning finds its dense run and
retraining its pruned topology (``topology = "file:{parent}/topology.npz"``).
"""

from __future__ import annotations

import copy
import itertools
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from sparsetopo import runs
from sparsetopo.desc.identity import RunDesc, token
from sparsetopo.errors import ConfigError
from sparsetopo.training.commands import parse_steps

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KINDS = ("fig7", "fig8", "fig9", "lr", "ablation", "dst", "table")
STANDARD_PROFILES = ("smoke", "quick", "paper")
_TOP_KEYS = {"experiment", "fixed", "stages", "profiles"}
_EXPERIMENT_KEYS = {"name", "kind", "title", "description", "default_profile", "paper_findings", "match", "contrasts"}
_STAGE_KEYS = {"command", "parent", "inherit", "fixed", "axes", "cases", "enabled", "description"}
_PROFILE_KEYS = {"fixed", "stages", "experiment"}


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: ``params`` may hold ``{run:ID}`` tokens for the runs in ``deps``; ``id`` is the
    run id :func:`sparsetopo.runs.describe` gives those params, the same as the CLI and the API give."""

    id: str
    command: str
    params: dict[str, Any]
    deps: tuple[str, ...]
    experiment: str
    stage: str
    hparams: dict[str, Any] = field(default_factory=dict)  # the canonical options: what the results store records


@dataclass
class Experiment:
    name: str
    kind: str
    title: str
    description: str
    profile: str
    path: str
    source: str
    runs: list[RunSpec] = field(default_factory=list)
    memberships: list[tuple[str, str]] = field(default_factory=list)  # (stage, run id), every stage's view
    findings: list[dict[str, Any]] = field(default_factory=list)

    def stage_runs(self, stage: str) -> list[str]:
        return [rid for st, rid in self.memberships if st == stage]


def _merge(base: Any, overlay: Any) -> Any:
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for key, value in overlay.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(overlay)


def _need(cond: bool, where: str, problem: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {problem}")


def _expand_table(table: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """The product of a table's list values (axes, in order), each combined with its scalar values."""
    _need(isinstance(table, Mapping), where, f"expected a table, got {table!r}")
    keys = list(table)
    values = []
    for key in keys:
        value = table[key]
        if isinstance(value, list):
            _need(len(value) > 0, where, f"axis {key!r} is an empty list")
            for v in value:
                _need(not isinstance(v, (list, dict)), where, f"axis {key!r} holds a nested value {v!r}")
            values.append(value)
        else:
            _need(not isinstance(value, dict), where, f"{key!r} must be a value or a list, not a table")
            values.append([value])
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def _substitute(value: Any, parent_id: str | None, where: str) -> Any:
    if isinstance(value, str) and "{parent}" in value:
        _need(parent_id is not None, where, f"{value!r} uses {{parent}} but the stage has no parent")
        return value.replace("{parent}", token(parent_id))
    return value


def load_document(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"experiment file {p}: not found") from None
    except OSError as exc:
        raise ConfigError(f"experiment file {p}: unreadable ({exc})") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"experiment file {p}: invalid TOML: {exc}") from None


def profiles_of(doc: Mapping[str, Any]) -> list[str]:
    return list(doc.get("profiles", {}))


def apply_profile(doc: Mapping[str, Any], profile: str, where: str) -> dict[str, Any]:
    profiles = doc.get("profiles", {})
    _need(isinstance(profiles, dict), where, "[profiles] must be a table")
    if profile not in profiles:
        allowed = ", ".join(profiles) or "(none declared)"
        raise ConfigError(f"{where}: profile {profile!r} is not declared; choose one of: {allowed}")
    overlay = profiles[profile]
    _need(isinstance(overlay, dict), where, f"profile {profile!r} must be a table")
    bad = sorted(set(overlay) - _PROFILE_KEYS)
    _need(not bad, where, f"profile {profile!r}: unknown key(s) {', '.join(bad)}; allowed: "
          f"{', '.join(sorted(_PROFILE_KEYS))}")
    for stage in overlay.get("stages", {}):
        _need(stage in doc.get("stages", {}), where,
              f"profile {profile!r} changes stage {stage!r}, which the file does not declare")
    base = {k: v for k, v in doc.items() if k != "profiles"}
    return _merge(base, overlay)


def load_experiment(path: str | os.PathLike[str], profile: str | None = None, threads: int = 1,
                    device: str = "cpu") -> Experiment:
    """Read, validate and expand an experiment file under ``profile`` (default: the file's default). Runs
    that do not set ``threads`` or ``device`` get these (both are part of each run's name)."""
    where = f"experiment file {path}"
    doc, text = load_document(path)
    bad = sorted(set(doc) - _TOP_KEYS)
    _need(not bad, where, f"unknown top-level key(s) {', '.join(bad)}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    meta = doc.get("experiment", {})
    _need(isinstance(meta, dict), where, "[experiment] must be a table")
    bad = sorted(set(meta) - _EXPERIMENT_KEYS)
    _need(not bad, where, f"[experiment]: unknown key(s) {', '.join(bad)}; allowed: {', '.join(sorted(_EXPERIMENT_KEYS))}")
    profile = profile or meta.get("default_profile") or "paper"
    doc = apply_profile(doc, profile, where)
    meta = doc.get("experiment", {})
    name = meta.get("name") or Path(path).stem
    kind = meta.get("kind", "table")
    _need(kind in KINDS, where, f"kind {kind!r} is not allowed; choose one of: {', '.join(KINDS)}")
    exp = Experiment(name=str(name), kind=kind, title=str(meta.get("title", name)),
                     description=str(meta.get("description", "")), profile=profile,
                     path=str(Path(path).resolve()), source=text,
                     findings=list(meta.get("paper_findings", [])))
    fixed = doc.get("fixed", {})
    _need(isinstance(fixed, dict), where, "[fixed] must be a table")
    stages = doc.get("stages", {})
    _need(isinstance(stages, dict) and stages, where, "declare at least one [stages.NAME] table")

    by_stage: dict[str, list[RunSpec]] = {}
    seen: dict[str, RunSpec] = {}
    for sname, stage in stages.items():
        swhere = f"{where}: stage {sname!r}"
        _need(isinstance(stage, dict), swhere, "must be a table")
        bad = sorted(set(stage) - _STAGE_KEYS)
        _need(not bad, swhere, f"unknown key(s) {', '.join(bad)}; allowed: {', '.join(sorted(_STAGE_KEYS))}")
        if not stage.get("enabled", True):
            by_stage[sname] = []
            continue
        command = stage.get("command")
        _need(command in runs.KINDS, swhere, f"command {command!r} is not allowed; choose one of: "
              f"{', '.join(runs.KINDS)}")
        parents_decl = stage.get("parent", [])
        parents = [parents_decl] if isinstance(parents_decl, str) else list(parents_decl)
        for pname in parents:
            _need(pname in by_stage, swhere, f"parent {pname!r} must be a stage declared above this one "
                  f"(declared so far: {', '.join(by_stage) or 'none'})")
        inherit = stage.get("inherit", [])
        _need(isinstance(inherit, list) and all(isinstance(k, str) for k in inherit), swhere,
              "inherit must be a list of option names")
        _need(not inherit or parents, swhere, "inherit needs a parent")
        sfixed = stage.get("fixed", {})
        _need(isinstance(sfixed, dict), swhere, "fixed must be a table")
        for key, value in sfixed.items():
            _need(not isinstance(value, (list, dict)), swhere, f"fixed {key!r} must be a single value; put lists in axes")
        axes = stage.get("axes", {})
        cases = stage.get("cases", [{}])
        _need(isinstance(cases, list) and cases, swhere, "cases must be a non-empty list of tables")
        case_rows = [row for i, case in enumerate(cases) for row in _expand_table(case, f"{swhere} case {i + 1}")]
        axis_rows = _expand_table(axes, f"{swhere} axes")
        parent_runs: list[RunSpec | None] = [r for p in parents for r in by_stage[p]] if parents else [None]
        if parents and not parent_runs:
            by_stage[sname] = []
            continue
        out: list[RunSpec] = []
        for parent in parent_runs:
            for case in case_rows:
                for axis in axis_rows:
                    params: dict[str, Any] = dict(fixed)
                    if parent is not None:
                        for key in inherit:
                            if key in parent.params:
                                params[key] = parent.params[key]
                    params.update(sfixed)
                    params.update(case)
                    params.update(axis)
                    pid = parent.id if parent is not None else None
                    params = {k: _substitute(v, pid, swhere) for k, v in params.items()}
                    params.setdefault("threads", threads)
                    if device != "cpu":
                        params.setdefault("device", device)
                    desc = validated(command, params, swhere)
                    deps = tuple(desc.references())
                    rid = desc.run_id
                    spec = seen.get(rid)
                    if spec is not None:  # the same run from another stage: keep both's snapshot steps
                        spec.params.update(merge_run_options(spec.params, params))
                    else:
                        spec = RunSpec(id=rid, command=command, params=params, deps=deps,
                                       experiment=exp.name, stage=sname,
                                       hparams={k: v for k, v in desc.canonical().items() if k != "command"})
                        seen[rid] = spec
                        exp.runs.append(spec)
                    if (sname, rid) not in exp.memberships:
                        exp.memberships.append((sname, rid))
                    if spec not in out:
                        out.append(spec)
        by_stage[sname] = out
    _need(bool(exp.runs), where, f"profile {profile!r} expands to no runs")
    contrasts = meta.get("contrasts", [])
    _need(isinstance(contrasts, list) and all(isinstance(c, list) and len(c) == 2 and all(isinstance(x, str) for x in c)
                                              for c in contrasts),
          where, f"[experiment] contrasts must be a list of [stage, stage] pairs, got {contrasts!r}")
    unknown = sorted({x for c in contrasts for x in c} - set(stages))
    _need(not unknown, where, f"[experiment] contrasts: unknown stage(s) {', '.join(unknown)}; stages: {', '.join(stages)}")
    return exp


def merge_run_options(kept: dict[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of one run that two stages ask for (the same hyperparameters, so the same id): those
    of the first, with the weight snapshots either asks for (``snapshot_steps``, a run option outside the
    id), so that a later stage's ``--init rewind:RUN@STEP`` finds its step whichever stage listed RUN."""
    steps = sorted(set(parse_steps(kept.get("snapshot_steps"))) | set(parse_steps(other.get("snapshot_steps"))))
    if not steps or list(parse_steps(kept.get("snapshot_steps"))) == steps:
        return kept
    return {**kept, "snapshot_steps": ",".join(str(n) for n in steps)}


def validated(command: str, params: Mapping[str, Any], where: str) -> RunDesc:
    """The run's description, refused (with ``where`` in front, once) for every value the CLI refuses."""
    try:
        desc = runs.describe(command, params)
        runs.check(desc)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return desc


Filter = tuple[str, str]  # (option name, value as text)


def parse_filter(text: str) -> Filter:
    """``--only KEY=VALUE``: a run option and a value, checked against the options the kinds of run have."""
    key, eq, value = text.partition("=")
    key = key.strip().replace("-", "_")
    known = sorted({f.name for k in runs.KINDS.values() for cls in k.groups for f in fields(cls)})
    if not eq or not key or not value.strip():
        raise ConfigError(f"--only {text!r}: use KEY=VALUE, e.g. model=lenet300")
    if key not in known:
        raise ConfigError(f"--only {text!r}: {key!r} is not an option of any run; options: {', '.join(known)}")
    return key, value.strip()


def _matches(spec: RunSpec, key: str, value: str) -> bool:
    """Whether the run's ``key`` is ``value``, both read the way the run reads them (so ``scale=neurons:1/10``
    matches ``neurons:0.1``)."""
    try:
        mine = runs.describe(spec.command, spec.params).to_dict()
        theirs = runs.describe(spec.command, {**spec.params, key: value}).to_dict()
    except ConfigError:
        return False
    return key in mine and mine[key] == theirs[key]


def select(specs: Iterable[RunSpec], filters: Iterable[Filter]) -> list[RunSpec]:
    """The runs that match every filter, and the runs they depend on (in their order)."""
    specs, filters = list(specs), list(filters)
    if not filters:
        return specs
    by_id = {s.id: s for s in specs}
    keep: set[str] = set()
    todo = [s.id for s in specs if all(_matches(s, k, v) for k, v in filters)]
    while todo:
        rid = todo.pop()
        if rid not in keep:
            keep.add(rid)
            todo.extend(d for d in by_id[rid].deps if d in by_id)
    return [s for s in specs if s.id in keep]


def order_runs(runs: Iterable[RunSpec]) -> list[RunSpec]:
    """Runs with every run after the runs it depends on (stable otherwise); unknown deps are refused."""
    runs = list(runs)
    by_id = {r.id: r for r in runs}
    done: set[str] = set()
    out: list[RunSpec] = []
    visiting: set[str] = set()

    def visit(r: RunSpec) -> None:
        if r.id in done:
            return
        if r.id in visiting:
            raise ConfigError(f"run {r.id} depends on itself through {', '.join(r.deps)}")
        visiting.add(r.id)
        for dep in r.deps:
            if dep not in by_id:
                raise ConfigError(f"run {r.id} refers to run {dep}, which is not part of the sweep")
            visit(by_id[dep])
        visiting.discard(r.id)
        done.add(r.id)
        out.append(r)

    for r in runs:
        visit(r)
    return out


# ------------------------------------------------------------------------------------------------------
# The shipped experiment files


def shipped_dir() -> Path:
    """Where the shipped ``*.toml`` experiment files are: ``$SPARSETOPO_EXPERIMENTS``, else the package's
    ``shipped`` folder (a link to the repository's ``experiments/`` in a source checkout), else the
    ``experiments/`` folder of the source tree around the package."""
    env = os.environ.get("SPARSETOPO_EXPERIMENTS")
    if env:
        return Path(env)
    candidates = []
    try:
        candidates.append(Path(str(resources.files("sparsetopo.experiments").joinpath("shipped"))))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover
        pass
    candidates.append(Path(__file__).resolve().parents[3] / "experiments")
    for cand in candidates:
        if cand.is_dir() and any(cand.glob("*.toml")):
            return cand
    raise ConfigError("the shipped experiment files were not found (looked in "
                      + ", ".join(str(c) for c in candidates) + "); set SPARSETOPO_EXPERIMENTS to their folder")


def shipped_names() -> list[str]:
    order = {"fig7": 0, "fig8": 1, "fig9": 2}
    names = [p.stem for p in shipped_dir().glob("*.toml")]
    return sorted(names, key=lambda n: (order.get(n, 9), n))


def find_experiment_file(name_or_path: str) -> Path:
    """A path to an experiment file, or the name of a shipped one (``fig7``)."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists() or os.sep in name_or_path:
        if not p.is_file():
            raise ConfigError(f"experiment file {p}: not found")
        return p
    names = shipped_names()
    if name_or_path not in names:
        raise ConfigError(f"no experiment file {name_or_path!r}; give a path to a .toml file or one of the "
                          f"shipped experiments: {', '.join(names)}")
    return shipped_dir() / f"{name_or_path}.toml"
