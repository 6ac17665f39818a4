"""The kinds of run, and the Python entry point equivalent to the CLI.

``run("train", {"model": "lenet300", "topology": "random:density=0.1"}, "runs/x")`` trains; a small
registry maps each kind (``train``, ``prune``) to its hyperparameter groups, its checks and its runner, so
the sweep, the estimator and the report build a run's description the same way the CLI does
(:func:`describe`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsetopo.desc.hparams import build, refuse_unknown
from sparsetopo.desc.identity import RunDesc
from sparsetopo.errors import ConfigError
from sparsetopo.pruning.hparams import PRUNE_GROUPS
from sparsetopo.pruning.run import check_prune, run_prune
from sparsetopo.training.commands import run_options
from sparsetopo.training.hparams import TRAIN_GROUPS
from sparsetopo.training.run import RunOptions, check_train, execute, place

# Options a run takes that do not change its numbers: never part of its description or name.
OPTION_KEYS = ("data_dir", "mirror", "checkpoint_every", "snapshot_steps")


@dataclass(frozen=True)
class RunKind:
    """One kind of run: its groups, its checks before any work (no data loaded), and its runner."""

    name: str
    groups: tuple[type, ...]
    check: Callable[[RunDesc], None]
    run: Callable[[RunDesc, RunOptions, set[str]], dict[str, Any]]


def _run_train(desc: RunDesc, options: RunOptions, given: set[str]) -> dict[str, Any]:
    return execute(place(desc, options.out), options)


KINDS: dict[str, RunKind] = {
    "train": RunKind("train", TRAIN_GROUPS, check_train, _run_train),
    "prune": RunKind("prune", PRUNE_GROUPS, check_prune, run_prune),
}


def kind(name: str) -> RunKind:
    if name not in KINDS:
        raise ConfigError(f"command {name!r} is not allowed; choose one of: {', '.join(KINDS)}")
    return KINDS[name]


def split_options(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, run options) of a parameter dict."""
    hyper = {k: v for k, v in params.items() if k not in OPTION_KEYS}
    return hyper, {k: v for k, v in params.items() if k in OPTION_KEYS}


def describe(command: str, params: Mapping[str, Any]) -> RunDesc:
    """The description of a run from option names as in the CLI (underscores) and their values (text or
    typed); unknown options and bad values are refused by name. Run options are left out."""
    k = kind(command)
    hyper, _ = split_options(params)
    refuse_unknown(hyper, k.groups, command, extra=OPTION_KEYS)
    return RunDesc(command, tuple(build(cls, hyper) for cls in k.groups))


def check(desc: RunDesc) -> None:
    """Every refusal the run would give before it starts, without loading data; references to runs that
    have not run yet (``{run:ID}``) are checked when they have."""
    kind(desc.kind).check(desc)


def run(command: str, params: Mapping[str, Any], out_dir: str | os.PathLike[str] | None = None, *,
        quiet: bool = True) -> dict[str, Any]:
    """Run ``command`` ("train" or "prune") with ``params`` in ``out_dir`` (default ``runs/<run id>``);
    resumes from its checkpoint, and returns the run's summary dict. ``{run:ID}`` in a value names run ID in
    the same folder as ``out_dir``."""
    desc = describe(command, params)
    _, extra = split_options(params)
    options = run_options({"out": Path(out_dir) if out_dir is not None else None, "quiet": quiet, **extra})
    return kind(command).run(desc, options, set(params))
