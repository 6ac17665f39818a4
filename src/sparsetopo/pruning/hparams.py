"""The hyperparameters of ``sparsetopo prune``: one group added to the training groups."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from sparsetopo.desc.hparams import Hparams, hp, non_negative, positive
from sparsetopo.desc.identity import RunRef, parse_run_ref
from sparsetopo.errors import ConfigError
from sparsetopo.training.hparams import TRAIN_GROUPS

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
    section: ClassVar[str] = "pruning"
    method: str = hp("gradual", "gradual: prune while training (Zhu & Gupta); oneshot: prune a finished run "
                     "(--from) once, without retraining", choices=METHODS)
    sparsity: float | None = hp(None, "target fraction of weights removed, in [0, 1) (required)", check=_fraction)
    initial_sparsity: float = hp(0.0, "gradual: sparsity of the first pruning step (s_i)", check=_fraction)
    begin: int = hp(2000, "gradual: step of the first pruning", check=non_negative)
    end: int = hp(5000, "gradual: step of the last pruning (the target is reached here)", check=non_negative)
    frequency: int = hp(200, "gradual: steps between pruning steps", check=positive)
    global_prune: bool = hp(False, "one magnitude threshold over all pruned layers (default: each layer to the target)",
                            flags=("--global", "--global-prune"))
    exclude: str | None = hp(None, "layers left unpruned, comma-separated, e.g. conv1,fc3", check=_layer_list,
                             metavar="LAYERS")
    from_run: RunRef | None = hp(None, "oneshot: the finished train run directory to prune", metavar="DENSE_RUN",
                                 parse=parse_run_ref, flags=("--from", "--from-run"))

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
