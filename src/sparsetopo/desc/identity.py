"""A run's description and its identity: canonical form -> hash -> directory, in one place.

A :class:`RunDesc` is a run kind (``train``, ``prune``, ...) and its built hyperparameter groups. Its
*canonical* form is the kind plus every field whose value differs from its default, in JSON form (typed
values by their canonical text), so

- every spelling of the same value (``10`` and ``10.0``, ``density=0.1`` and ``density=1/10``) names the
  same run;
- a new hyperparameter with a default never renames an existing run;
- options that do not change the numbers (where the data is, how often to checkpoint) are not fields of
  any group, so they are not part of it.

The run id is ``<kind>-<first 12 hex digits of the SHA-256 of the canonical JSON>``, and a run's default
directory is ``runs/<run id>``; a sweep's runs live in ``DIR/runs/<run id>``.

A value may name another run with the token ``{run:ID}`` (a one-shot run's dense run, a retraining run's
pruned topology ``file:{run:ID}/topology.npz``). The token is part of the identity, never a path, so a
results folder can move; it is located when the run executes (:func:`locate`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

from sparsetopo.errors import ConfigError

RUN_TOKEN = re.compile(r"\{run:([A-Za-z0-9_.\-]+)\}")
HASH_LENGTH = 12
RUNS_DIR = Path("runs")


@dataclass(frozen=True)
class RunDesc:
    """One run: its kind and its hyperparameter groups (built, so every value is parsed and checked)."""

    kind: str
    groups: tuple[Any, ...]

    def group(self, cls: type) -> Any:
        for g in self.groups:
            if isinstance(g, cls):
                return g
        raise KeyError(cls.__name__)

    def get(self, name: str, default: Any = None) -> Any:
        """The typed value of field ``name`` in whichever group declares it."""
        for g in self.groups:
            if any(f.name == name for f in fields(g)):
                return getattr(g, name)
        return default

    def replace(self, **changes: Any) -> RunDesc:
        """A copy with some fields changed (each in the group that declares it)."""
        left = dict(changes)
        groups = []
        for g in self.groups:
            mine = {k: left.pop(k) for k in list(left) if any(f.name == k for f in fields(g))}
            groups.append(replace(g, **mine) if mine else g)
        if left:
            raise KeyError(", ".join(left))
        return RunDesc(self.kind, tuple(groups))

    def to_dict(self) -> dict[str, Any]:
        """Every field in JSON form."""
        return {k: v for g in self.groups for k, v in g.to_dict().items()}

    def canonical(self) -> dict[str, Any]:
        """The kind and the non-default fields: what names the run."""
        out: dict[str, Any] = {}
        for g in self.groups:
            out.update(g.non_defaults())
        return {"command": self.kind, **out}

    @property
    def run_id(self) -> str:
        return run_id(self.canonical())

    def default_dir(self, root: str | os.PathLike[str] = RUNS_DIR) -> Path:
        return Path(root) / self.run_id

    def references(self) -> list[str]:
        """The run ids this run names with ``{run:ID}`` tokens, in order."""
        found: list[str] = []
        for value in self.to_dict().values():
            for rid in references_in(value):
                if rid not in found:
                    found.append(rid)
        return found


def run_id(canonical: Mapping[str, Any]) -> str:
    """``<kind>-<12 hex>`` of a canonical dict (which holds the kind under ``command``)."""
    text = json.dumps(dict(canonical), sort_keys=True, separators=(",", ":"), default=str)
    return f"{canonical['command']}-{hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]}"


def references_in(value: Any) -> list[str]:
    return RUN_TOKEN.findall(value) if isinstance(value, str) else []


def token(rid: str) -> str:
    return f"{{run:{rid}}}"


Locator = Callable[[str], Path]


def locate(text: str, find: Locator) -> str:
    """``text`` with every ``{run:ID}`` replaced by that run's directory, as ``find(ID)`` gives it."""
    return RUN_TOKEN.sub(lambda m: str(find(m.group(1))), text)


def sibling_locator(out: Path, hints: Mapping[str, str] | None = None) -> Locator:
    """Find run ID beside ``out`` (the runs folder of a sweep or of ``runs/``), else at the path recorded
    relative to ``out`` when the reference was made; refuse with both places named otherwise."""
    hints = dict(hints or {})

    def find(rid: str) -> Path:
        candidates = [out.parent / rid]
        if rid in hints:
            candidates.append((out / hints[rid]).resolve() if not os.path.isabs(hints[rid]) else Path(hints[rid]))
        for cand in candidates:
            if (cand / "hparams.json").is_file():
                return cand
        raise ConfigError(f"run {out.name} needs run {rid}, which is in none of: "
                          f"{', '.join(str(c) for c in dict.fromkeys(candidates))}; move it back beside {out}")

    return find


def run_dir_of(path: Path) -> tuple[Path, str] | None:
    """(run directory, run id) when ``path`` is a run directory or a file in one, else None."""
    for cand in (path, path.parent):
        meta = cand / "hparams.json"
        if meta.is_file():
            try:
                rid = json.loads(meta.read_text()).get("run_id")
            except (OSError, ValueError):
                return None
            return (cand, rid) if isinstance(rid, str) and rid else None
    return None


@dataclass(frozen=True)
class RunRef:
    """Another run, by its directory or as ``{run:ID}`` (the dense run a one-shot run prunes)."""

    path: str

    def __str__(self) -> str:
        return self.path

    def ref_path(self) -> str | None:
        return self.path

    def with_ref_path(self, path: str) -> RunRef:
        return RunRef(path)


def parse_run_ref(value: Any) -> RunRef:
    if isinstance(value, RunRef):
        return value
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise ConfigError(f"{value!r} is not a run: give a run directory (or {{run:ID}} in an experiment file)")
    return RunRef(str(value).strip())


class PathValue(Protocol):
    """A typed value that may name a file or run directory (``file:PATH``, ``rewind:RUN@STEP``, a run)."""

    def ref_path(self) -> str | None: ...

    def with_ref_path(self, path: str) -> Any: ...


def _path_values(desc: RunDesc) -> Iterator[tuple[str, PathValue]]:
    for name, value in ((f.name, getattr(g, f.name)) for g in desc.groups for f in fields(g)):
        if hasattr(value, "ref_path") and value.ref_path():
            yield name, value


def bind_references(desc: RunDesc) -> tuple[RunDesc, dict[str, Path]]:
    """``desc`` with every path that lies in a run directory written as ``{run:ID}[/file]``, so that the run
    is named by the runs it depends on, not by where they are; plus where each of those runs is (run id ->
    its directory), to find it again when it is not beside the run."""
    changes: dict[str, Any] = {}
    hints: dict[str, Path] = {}
    for name, value in _path_values(desc):
        raw = value.ref_path() or ""
        if RUN_TOKEN.search(raw):
            continue
        path = Path(raw).expanduser().resolve()
        found = run_dir_of(path) if path.exists() else None
        if found is None:
            continue
        folder, rid = found
        rest = path.relative_to(folder)
        changes[name] = value.with_ref_path(token(rid) + ("" if rest == Path(".") else f"/{rest.as_posix()}"))
        hints[rid] = folder
    return (desc.replace(**changes) if changes else desc), hints


def resolve_references(desc: RunDesc, find: Locator) -> RunDesc:
    """``desc`` with every ``{run:ID}`` replaced by the directory ``find`` gives: what the run reads."""
    changes = {name: value.with_ref_path(locate(value.ref_path() or "", find))
               for name, value in _path_values(desc) if RUN_TOKEN.search(value.ref_path() or "")}
    return desc.replace(**changes) if changes else desc
