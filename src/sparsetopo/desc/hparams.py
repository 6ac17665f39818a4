"""Hyperparameters as dataclasses that also build the CLI, load from TOML and name runs.

Each group is a frozen dataclass whose fields carry their help text, allowed choices, a check and, for a
value with a grammar of its own (a topology spec, a width scale), the parser that turns its text into a
typed value. The same declaration gives the argparse flags (``--batch-size``), the TOML keys
(``batch_size``, flat or under the group's ``[section]``), validation with a clear message, and the
canonical JSON form that names a run. A value is parsed once, when the group is built, and every
consumer reads the typed value.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import field, fields
from pathlib import Path
from typing import Any, ClassVar, Union, cast, get_args, get_origin, get_type_hints

from sparsetopo.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Check = Callable[[Any], "str | None"]
Parse = Callable[[Any], Any]


def hp(default: Any, help: str, *, choices: tuple[str, ...] | None = None, check: Check | None = None,
       metavar: str | None = None, parse: Parse | None = None, flags: tuple[str, ...] = (),
       unnamed: tuple[Any, ...] = ()) -> Any:
    """Declare a hyperparameter field. ``parse`` turns the text (or TOML value) into the field's typed value,
    raising ConfigError; ``str()`` of that value must be its canonical text. ``flags`` replaces the flag
    names derived from the field name. ``unnamed``: values (JSON form) that, like the default, are left out of
    a run's name (a default resolved at run time, e.g. a device that turns out to be the CPU)."""
    return field(default=default, metadata={"help": help, "choices": choices, "check": check, "metavar": metavar,
                                            "parse": parse, "flags": flags, "unnamed": unnamed})


def positive(value: Any) -> str | None:
    return None if value is None or value > 0 else "must be > 0"


def non_negative(value: Any) -> str | None:
    return None if value is None or value >= 0 else "must be >= 0"


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


def finite_float(text: str) -> float:
    """argparse ``type=`` for a float option outside the hyperparameter groups: ``inf`` and ``nan`` are
    refused like any other bad number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: must be a finite number")
    return value


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def to_json(value: Any) -> Any:
    """The JSON form of a field value: typed values (specs, scales, widths) as their canonical text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return ",".join(map(str, value))
    return str(value)


class Hparams:
    """Mixin of every hyperparameter group: typed parsing, validation, JSON form."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            value = _coerce(f, _base_type(hints[f.name]), getattr(self, f.name), f.name)
            object.__setattr__(self, f.name, value)
            choices, check = f.metadata.get("choices"), f.metadata.get("check")
            if choices and value is not None and value not in choices:
                raise ConfigError(f"{flag(f.name)}: {value!r} is not allowed; choose one of: {', '.join(choices)}")
            problem = check(value) if check else None
            if problem:
                raise ConfigError(f"{flag(f.name)}: {to_json(value)!r} is invalid: {problem}")

    def to_dict(self) -> dict[str, Any]:
        """Every field in its JSON form."""
        return {f.name: to_json(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    def non_defaults(self) -> dict[str, Any]:
        """The fields whose value differs from the default, in JSON form (so new defaults keep run names)."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = to_json(getattr(self, f.name))
            if value != to_json(_default(f)) and value not in f.metadata.get("unnamed", ()):
                out[f.name] = value
        return out


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else None


def _coerce(f: dataclasses.Field, kind: Any, value: Any, where: str) -> Any:
    """``value`` as the field's type: parsed when the field has a parser, numbers normalised, the rest
    checked. Refuses non-finite numbers for every float field."""
    if value is None:
        return None
    parse = f.metadata.get("parse")
    if parse is not None:
        return parse(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    elif kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = getattr(kind, "__name__", str(kind))
        raise ConfigError(f"{where} = {value!r} must be of type {name}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{where} = {value!r} is invalid: must be a finite number")
    return value


def add_arguments(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """Add one flag per field of hyperparameter group ``cls``; defaults are left out (see :func:`collect`)."""
    group = parser.add_argument_group(title or getattr(cls, "section", "") or cls.__name__)
    hints = _hints(cls)
    for f in fields(cls):
        kind = _base_type(hints[f.name])
        default = _default(f)
        text = f.metadata.get("help", "")
        text = f"{text} (default: {to_json(default)})" if default is not None else text
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            if f.metadata.get("parse") is None and kind in (int, float):
                kwargs["type"] = kind  # non-finite numbers are refused when the group is built, like any bad value
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            if f.metadata.get("metavar"):
                kwargs["metavar"] = f.metadata["metavar"]
        group.add_argument(*(f.metadata.get("flags") or (flag(f.name),)), **kwargs)


def load_toml(path: str | Path, groups: Sequence[type], extra: Iterable[str] = ()) -> dict[str, Any]:
    """Read a config file into a flat dict. Keys may be flat or under their group's ``[section]``; an
    unknown section, a key outside its section, and a key given twice are refused by name."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: unreadable ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
    # every group is an Hparams dataclass; ``groups`` is typed ``type`` so that ``fields`` accepts it
    sections = {cast("type[Hparams]", cls).section: {f.name for f in fields(cls)}
                for cls in groups if cast("type[Hparams]", cls).section}
    known = {f.name for cls in groups for f in fields(cls)} | set(extra)
    flat: dict[str, Any] = {}
    where_from: dict[str, str] = {}

    def put(key: str, value: Any, where: str) -> None:
        name = key.replace("-", "_")
        if name in flat:
            raise ConfigError(f"config file {path}: {name} is given twice ({where_from[name]} and {where}); "
                              "give it once")
        flat[name], where_from[name] = value, where

    for key, value in raw.items():
        if isinstance(value, dict):
            if key not in sections:
                raise ConfigError(f"config file {path}: unknown section [{key}]; allowed sections: "
                                  f"{', '.join(f'[{s}]' for s in sections)} (or flat keys)")
            for sub, sub_value in value.items():
                if sub.replace("-", "_") not in sections[key]:
                    raise ConfigError(f"config file {path}: [{key}] has no key {sub!r}; its keys: "
                                      f"{', '.join(sorted(sections[key]))}")
                put(sub, sub_value, f"[{key}]")
        else:
            if key.replace("-", "_") not in known:
                raise ConfigError(f"config file {path}: unknown key {key!r}; allowed: {', '.join(sorted(known))}")
            put(key, value, "the top level")
    return flat


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """Instantiate group ``cls`` from the keys of ``values`` that belong to it."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def refuse_unknown(values: Mapping[str, Any], groups: Sequence[type], what: str, extra: Iterable[str] = ()) -> None:
    known = {f.name for cls in groups for f in fields(cls)} | set(extra)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{what}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")


def collect(groups: Sequence[type], values: argparse.Namespace | Mapping[str, Any],
            config: str | Path | None = None) -> list[Any]:
    """Merge defaults < config file < explicit values, and build every group."""
    explicit = dict(vars(values)) if isinstance(values, argparse.Namespace) else dict(values)
    merged: dict[str, Any] = load_toml(config, groups) if config else {}
    merged.update({k: v for k, v in explicit.items() if v is not None or k not in merged})
    return [build(cls, merged) for cls in groups]
