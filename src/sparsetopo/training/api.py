"""The Python entry point equivalent to the CLI: ``run("train", {"model": "lenet300", ...}, "runs/x")``."""

from __future__ import annotations

import os
from typing import Any, Mapping

from sparsetopo.errors import ConfigError
from sparsetopo.training.hparams import TRAIN_GROUPS, collect
from sparsetopo.training.commands import run_options
from sparsetopo.training.run import check_init, execute

OPTION_KEYS = ("data_dir", "mirror", "checkpoint_every", "snapshot_steps")


def run(command: str, params: Mapping[str, Any], out_dir: str | os.PathLike[str], *, quiet: bool = True,
        threads: int | None = None) -> dict[str, Any]:
    """Run ``command`` ("train" or "prune") with ``params`` (option names as in the CLI, underscores) in
    ``out_dir``; resumes from its checkpoint, and returns the run's summary dict."""
    params = dict(params)
    options = run_options({"out": out_dir, "quiet": quiet, "threads": threads,
                           **{k: params.pop(k) for k in OPTION_KEYS if k in params}})
    if command == "train":
        groups = collect(TRAIN_GROUPS, params)
        _refuse_unknown(params, TRAIN_GROUPS, command)
        check_init(groups[1].init)
        return execute("train", groups, options)
    if command == "prune":
        from sparsetopo.pruning.run import PRUNE_GROUPS, run_prune

        _refuse_unknown(params, PRUNE_GROUPS, command, extra=("from_run",))
        return run_prune(params, options)
    raise ConfigError(f"unknown command {command!r}; use 'train' or 'prune'")


def _refuse_unknown(params: Mapping[str, Any], groups: tuple[type, ...], command: str, extra: tuple[str, ...] = ()) -> None:
    from dataclasses import fields

    known = {f.name for g in groups for f in fields(g)} | set(extra)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"{command}: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
