"""The hyperparameters of ``sparsetopo prune``: one group added to the training groups."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields
from typing import Any

from sparsetopo.errors import ConfigError
from sparsetopo.training.hparams import TRAIN_GROUPS, Hparams, hp, non_negative, positive

METHODS = ("gradual", "oneshot")


def _fraction(value: Any) -> str | None:
    if value is None:
        return None
    return None if math.isfinite(value) and 0 <= value < 1 else "must be a fraction in [0, 1), e.g. 0.9"


def _layer_list(value: Any) -> str | None:
    if value is None:
        return None
    names = [n.strip() for n in str(value).split(",")]
    if not all(names):
        return "must be comma-separated layer names, e.g. conv1,fc3"
    return None


@dataclass(frozen=True)
class PruneHparams(Hparams):
    method: str = hp("gradual", "gradual: prune while training (Zhu & Gupta); oneshot: prune a finished run "
                     "(--from) once, without retraining", choices=METHODS)
    sparsity: float | None = hp(None, "target fraction of weights removed, in [0, 1) (required)", check=_fraction)
    initial_sparsity: float = hp(0.0, "gradual: sparsity of the first pruning step (s_i)", check=_fraction)
    begin: int = hp(2000, "gradual: step of the first pruning", check=non_negative)
    end: int = hp(5000, "gradual: step of the last pruning (the target is reached here)", check=non_negative)
    frequency: int = hp(200, "gradual: steps between pruning steps", check=positive)
    global_prune: bool = hp(False, "one magnitude threshold over all pruned layers (default: each layer to the target)")
    exclude: str | None = hp(None, "layers left unpruned, comma-separated, e.g. conv1,fc3", check=_layer_list,
                             metavar="LAYERS")
    from_run: str | None = hp(None, "oneshot: the finished train run directory to prune", metavar="DENSE_RUN")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sparsity is None:
            raise ConfigError("--sparsity is required: the fraction of weights to remove, in [0, 1), e.g. 0.9")
        if self.method == "gradual":
            if self.begin > self.end:
                raise ConfigError(f"--begin {self.begin} is after --end {self.end}; pruning needs begin <= end")
            if self.initial_sparsity > self.sparsity:
                raise ConfigError(f"--initial-sparsity {self.initial_sparsity} is above --sparsity {self.sparsity}; "
                                  "the schedule only removes weights")
            if self.from_run is not None:
                raise ConfigError(f"--from {self.from_run}: a finished run is pruned with --method oneshot; "
                                  "--method gradual trains the network itself")
        elif self.from_run is None:
            raise ConfigError("--method oneshot needs --from DENSE_RUN, the directory of a finished train run")

    @property
    def excluded(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.exclude.split(",")) if self.exclude else ()


PRUNE_GROUPS: tuple[type, ...] = (*TRAIN_GROUPS, PruneHparams)

# Flags whose names differ from the field names (the field name stays usable as a flag too).
FLAGS = {"global_prune": ("--global", "--global-prune"), "from_run": ("--from", "--from-run")}


def add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``pruning`` flags; defaults are left out so that :func:`~sparsetopo.training.hparams.collect`
    can tell explicit values from defaults."""
    group = parser.add_argument_group("pruning")
    for f in fields(PruneHparams):
        flags = FLAGS.get(f.name, (f"--{f.name.replace('_', '-')}",))
        text = f.metadata["help"]
        if f.default is not None:
            text = f"{text} (default: {f.default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        if f.name == "global_prune":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = {"sparsity": float, "initial_sparsity": float, "begin": int, "end": int,
                              "frequency": int}.get(f.name, str)
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            if f.metadata.get("metavar"):
                kwargs["metavar"] = f.metadata["metavar"]
        group.add_argument(*flags, **kwargs)
