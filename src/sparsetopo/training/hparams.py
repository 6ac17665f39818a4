"""Hyperparameters as dataclasses that also build the CLI, load from TOML and name runs by a hash.

Each group is a frozen dataclass whose fields carry their help text, allowed choices and a check. The same
declaration gives the argparse flags (``--batch-size``), the TOML keys (``batch_size``, flat or under a
``[group]`` table), validation with a clear message, and the canonical dict that names a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Union, get_args, get_origin, get_type_hints

from sparsetopo.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Check = Callable[[Any], str | None]


def hp(default: Any, help: str, *, choices: tuple[str, ...] | None = None, check: Check | None = None,
       metavar: str | None = None) -> Any:
    """Declare a hyperparameter field."""
    return field(default=default, metadata={"help": help, "choices": choices, "check": check, "metavar": metavar})


def positive(value: Any) -> str | None:
    return None if value is None or value > 0 else "must be > 0"


def non_negative(value: Any) -> str | None:
    return None if value is None or value >= 0 else "must be >= 0"


def finite_non_negative(value: Any) -> str | None:
    if value is None:
        return None
    return None if math.isfinite(value) and value >= 0 else "must be a finite number >= 0"


def fraction_list(value: Any) -> str | None:
    if value is None:
        return None
    try:
        parts = [float(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        return "must be a comma-separated list of fractions of the budget, e.g. 0.5,0.75"
    if not parts or any(not 0 < p < 1 for p in parts) or parts != sorted(parts):
        return "must be increasing fractions of the budget strictly between 0 and 1, e.g. 0.5,0.75"
    return None


class Hparams:
    """Mixin: validation and conversion shared by every hyperparameter group."""

    section: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            choices, check = f.metadata.get("choices"), f.metadata.get("check")
            if choices and value is not None and value not in choices:
                raise ConfigError(f"--{_flag(f.name)}: {value!r} is not allowed; choose one of: {', '.join(choices)}")
            problem = check(value) if check else None
            if problem:
                raise ConfigError(f"--{_flag(f.name)}: {value!r} is invalid: {problem}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _base_type(annotation: Any) -> type:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def add_arguments(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """Add one flag per field of hyperparameter group ``cls``; defaults are left out (see :func:`collect`)."""
    group = parser.add_argument_group(title or cls.__name__)
    hints = get_type_hints(cls)
    for f in fields(cls):
        kind = _base_type(hints[f.name])
        default = f.default
        text = f.metadata.get("help", "")
        text = f"{text} (default: {default})" if default is not None else text
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            if f.metadata.get("metavar"):
                kwargs["metavar"] = f.metadata["metavar"]
        group.add_argument(f"--{_flag(f.name)}", **kwargs)


def _coerce(cls: type, name: str, value: Any, source: str) -> Any:
    kind = _base_type(get_type_hints(cls)[name])
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {name} = {value!r} must be of type {kind.__name__}")
    return value


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file into a flat dict (``[section]`` tables are flattened)."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                flat[sub.replace("-", "_")] = sub_value
        else:
            flat[key.replace("-", "_")] = value
    return flat


def build(cls: type, values: Mapping[str, Any], source: str = "options") -> Any:
    """Instantiate group ``cls`` from the keys of ``values`` that belong to it."""
    names = {f.name for f in fields(cls)}
    kwargs = {k: _coerce(cls, k, v, source) for k, v in values.items() if k in names}
    return cls(**kwargs)


def collect(groups: tuple[type, ...], args: argparse.Namespace | Mapping[str, Any],
            config: str | Path | None = None, extra: tuple[str, ...] = ()) -> list[Any]:
    """Merge defaults < config file < explicit flags, refuse unknown config keys, and build every group."""
    explicit = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
    values: dict[str, Any] = {}
    if config:
        values.update(load_toml(config))
        known = {f.name for cls in groups for f in fields(cls)} | set(extra)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"config file {config}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    values.update({k: v for k, v in explicit.items() if v is not None or k not in values})
    return [build(cls, values, str(config) if config else "options") for cls in groups]


def canonical(groups: list[Any]) -> dict[str, Any]:
    """The dict that names a run: every field whose value differs from its default (so new defaults keep ids)."""
    out: dict[str, Any] = {}
    for group in groups:
        for f in fields(group):
            value = getattr(group, f.name)
            if value != f.default:
                out[f.name] = value
    return out


def run_hash(params: Mapping[str, Any], length: int = 12) -> str:
    """A stable short hash of a canonical hyperparameter dict."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# --------------------------------------------------------------------------------------------------------
# The groups


@dataclass(frozen=True)
class DataHparams(Hparams):
    dataset: str = hp("mnist", "dataset", choices=("mnist", "fashion-mnist", "cifar10"))
    batch_size: int = hp(100, "examples per training step", check=positive)
    data_seed: int | None = hp(None, "seed for the order of training examples (default: the same as --seed)")
    validation: int = hp(0, "examples held out of the training set for validation (0: none)", check=non_negative)


def _widths(value: Any) -> str | None:
    if value is None:
        return None
    try:
        parts = [int(v) for v in str(value).split(",")]
    except ValueError:
        return "must be comma-separated positive integers, e.g. 300,100"
    return None if all(p > 0 for p in parts) else "must be comma-separated positive integers, e.g. 300,100"


@dataclass(frozen=True)
class ModelHparams(Hparams):
    model: str = hp("lenet300", "model", choices=("lenet300", "lenet5"))
    seed: int = hp(0, "seed for weight initialisation (and for random topologies)")
    widths: str | None = hp(None, "hidden widths, comma-separated (lenet300: 300,100; lenet5: 20,50,500)", check=_widths)
    topology: str = hp("dense", "topology spec: dense | random:density=D[,mode=bernoulli|exact|fanin] | "
                       "radix:systems=10x10,kron=8x3x1[,trim=16] | file:PATH", metavar="SPEC")
    scale: str | None = hp(None, "width scaling: connections:K (widen xK at density 1/K) or neurons:F (density F)",
                           metavar="KIND:VALUE")
    init: str = hp("sparse", "initialisation of sparse layers: sparse (fan-in of the actual connections), dense "
                   "(framework default), rewind:RUN_DIR[@STEP] (a pruned run's own early weights)", metavar="INIT")
    backend: str = hp("auto", "sparse compute backend: auto | masked | sparse", choices=("auto", "masked", "sparse"))


@dataclass(frozen=True)
class TrainHparams(Hparams):
    optimizer: str = hp("sgd", "optimiser", choices=("sgd", "adam"))
    lr: float = hp(0.1, "learning rate", check=positive)
    momentum: float = hp(0.0, "SGD momentum", check=finite_non_negative)
    nesterov: bool = hp(False, "Nesterov momentum (SGD with momentum > 0)")
    weight_decay: float = hp(0.0, "L2 weight decay", check=finite_non_negative)
    schedule: str = hp("constant", "learning-rate schedule", choices=("constant", "step", "cosine"))
    milestones: str = hp("0.5,0.75", "step schedule: fractions of the budget where lr is multiplied by --gamma",
                         check=fraction_list)
    gamma: float = hp(0.1, "step schedule: factor at each milestone", check=positive)
    epochs: float | None = hp(None, "training budget in epochs (default: 20 when --steps is not given)", check=positive)
    steps: int | None = hp(None, "training budget in steps (instead of --epochs)", check=positive)
    eval_every: int | None = hp(None, "evaluate on the test set every N steps (default: once per epoch)", check=positive)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs is not None and self.steps is not None:
            raise ConfigError(f"give a budget in --epochs ({self.epochs}) or --steps ({self.steps}), not both")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ConfigError("--nesterov needs --optimizer sgd and --momentum > 0")

    def total_steps(self, steps_per_epoch: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, round((self.epochs if self.epochs is not None else 20.0) * steps_per_epoch))


TRAIN_GROUPS: tuple[type, ...] = (DataHparams, ModelHparams, TrainHparams)
