"""Canonical hyperparameters and run ids for sweeps.

A run is one call of ``sparsetopo.training.api.run(command, params, out_dir)``. Its id is a hash of its
*canonical* hyperparameters: the command plus every parameter whose value differs from the registered
default (so registering a new hyperparameter with a default never renames an existing run), with numbers
normalised to the declared type (``lr = 1`` and ``lr = 1.0`` name the same run) and operational options
that do not change the result (``data_dir``, ``checkpoint_every``) left out.

A parameter may refer to another run of the same sweep with the token ``{run:ID}``; the token stays
symbolic in the id (so moving an output directory renames nothing) and is replaced by that run's
directory only when the run executes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from sparsetopo.errors import ConfigError

COMMANDS = ("train", "prune")

# Options passed to a run that do not change its result: never part of its id.
OPERATIONAL = frozenset({"data_dir", "mirror", "checkpoint_every", "snapshot_steps"})

# Defaults for options the hyperparameter dataclasses of the training and pruning packages do not declare
# (or, for pruning, until they do). Values follow the issues' stated defaults.
_FALLBACK: dict[str, dict[str, Any]] = {
    "train": {
        "model": "lenet300", "dataset": "mnist", "batch_size": 100, "data_seed": None, "validation": 0,
        "seed": 0, "widths": None, "topology": "dense", "scale": None, "init": "sparse", "backend": "auto",
        "optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0,
        "schedule": "constant", "milestones": "0.5,0.75", "gamma": 0.1, "epochs": None, "steps": None,
        "eval_every": None,
    },
    "prune": {
        "method": "gradual", "sparsity": None, "initial_sparsity": 0.0, "begin": 2000, "end": 5000,
        "frequency": 200, "global_prune": False, "exclude": None, "from_run": None,
    },
}

RUN_TOKEN = re.compile(r"\{run:([A-Za-z0-9_.\-]+)\}")


def _dataclass_defaults(groups: tuple[type, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cls in groups:
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
    return out


def _groups(command: str) -> tuple[type, ...]:
    """The hyperparameter dataclasses of ``command`` as the training package declares them, if present."""
    try:
        from sparsetopo.training import hparams as th
    except ImportError:
        return ()
    groups = tuple(getattr(th, "TRAIN_GROUPS", ()))
    if command == "prune":
        try:
            from sparsetopo.pruning import hparams as ph  # type: ignore[import-not-found]
        except ImportError:
            ph = None
        extra = tuple(getattr(ph, "PRUNE_GROUPS", ())) if ph is not None else ()
        groups = groups + tuple(g for g in extra if g not in groups)
    return groups


@lru_cache(maxsize=None)
def registered_defaults(command: str) -> dict[str, Any]:
    """Every known option of ``command`` with its default value."""
    if command not in COMMANDS:
        raise ConfigError(f"command {command!r} is not allowed; choose one of: {', '.join(COMMANDS)}")
    out = dict(_FALLBACK["train"])
    if command == "prune":
        out.update(_FALLBACK["prune"])
    out.update(_dataclass_defaults(_groups(command)))
    return out


def known_options(command: str) -> frozenset[str]:
    return frozenset(registered_defaults(command)) | OPERATIONAL


def validate(command: str, params: Mapping[str, Any], where: str = "run") -> None:
    """Refuse bad values (an unknown optimiser, a negative learning rate, a sparsity of 1.5, ...) with the
    message the command itself would give, before any run starts."""
    check_options(command, params, where)
    from sparsetopo.training.hparams import build

    values = {k: v for k, v in params.items() if k not in OPERATIONAL}
    for cls in _groups(command):
        try:
            build(cls, values, where)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _normalise(key: str, value: Any, default: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} = {value!r}: hyperparameters must be finite numbers")
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(value, float) and value.is_integer() and isinstance(default, int) and not isinstance(default, bool):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_normalise(key, v, None) for v in value]
    return value


def check_options(command: str, params: Mapping[str, Any], where: str = "run") -> None:
    """Refuse option names that ``command`` does not have, naming them and the allowed ones."""
    known = known_options(command)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)} for '{command}'; "
                          f"allowed: {', '.join(sorted(known))}")


def canonical(command: str, params: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The dict that names a run: ``command`` plus the non-default, non-operational parameters."""
    defaults = registered_defaults(command) if defaults is None else defaults
    out: dict[str, Any] = {"command": command}
    for key in sorted(params):
        if key in OPERATIONAL or key == "command":
            continue
        default = defaults.get(key)
        value = _normalise(key, params[key], default)
        if key in defaults and value == _normalise(key, default, default) and type(value) is type(default):
            continue
        if value is None and key not in defaults:
            continue
        out[key] = value
    return out


def run_id(command: str, params: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> str:
    """``<command>-<16 hex>``: the same canonical hyperparameters always give the same id."""
    text = json.dumps(canonical(command, params, defaults), sort_keys=True, separators=(",", ":"))
    return f"{command}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def references(params: Mapping[str, Any]) -> list[str]:
    """Ids of the runs that ``params`` refers to with ``{run:ID}`` tokens, in order of appearance."""
    found: list[str] = []
    for value in params.values():
        if isinstance(value, str):
            for rid in RUN_TOKEN.findall(value):
                if rid not in found:
                    found.append(rid)
    return found


def resolve(params: Mapping[str, Any], runs_dir: str | Path) -> dict[str, Any]:
    """``params`` with every ``{run:ID}`` token replaced by that run's directory under ``runs_dir``."""
    base = Path(runs_dir).resolve()
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, str):
            value = RUN_TOKEN.sub(lambda m: str(base / m.group(1)), value)
        out[key] = value
    return out
