"""``sparsetopo train`` and ``sparsetopo inspect``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparsetopo.desc.hparams import add_arguments, collect
from sparsetopo.desc.identity import RunDesc
from sparsetopo.desc.status import RunStatus
from sparsetopo.errors import ConfigError
from sparsetopo.training.hparams import TRAIN_GROUPS

if TYPE_CHECKING:
    from sparsetopo.training.run import RunOptions

RUN_OPTION_NAMES = ("out", "data_dir", "mirror", "quiet", "checkpoint_every", "config", "snapshot_steps")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run options (not part of the run's name)")
    group.add_argument("--out", type=Path, help="run directory (default: runs/<command>-<hash of hyperparameters>); "
                       "re-running the same command on it resumes from its checkpoint")
    group.add_argument("--config", type=Path, help="TOML file of hyperparameters (flat keys or [sections]); "
                       "flags given on the command line override it")
    group.add_argument("--data-dir", help="data root (default: $SPARSETOPO_DATA, else ~/.cache/sparsetopo/data)")
    group.add_argument("--mirror", help="base URL to download missing dataset files from (default: $SPARSETOPO_MIRROR, "
                       "else the official sources); laid out like a data root")
    group.add_argument("--checkpoint-every", type=int, metavar="N",
                       help="checkpoint every N steps (default: at every evaluation)")
    group.add_argument("--snapshot-steps", metavar="S1,S2", default="",
                       help="also save the weights at these steps, for --init rewind:RUN@STEP (step 0 always is)")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def run_options(args: argparse.Namespace | dict[str, Any]) -> RunOptions:
    values = vars(args) if isinstance(args, argparse.Namespace) else args

    value = values.get("checkpoint_every")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ConfigError(f"--checkpoint-every: {value!r} is invalid: must be an integer > 0")
    from sparsetopo.training.run import RunOptions

    out = values.get("out")
    return RunOptions(out=Path(out) if out else None, data_dir=values.get("data_dir"), mirror=values.get("mirror"),
                      quiet=bool(values.get("quiet")), checkpoint_every=values.get("checkpoint_every"),
                      snapshot_steps=parse_steps(values.get("snapshot_steps")))


def parse_steps(text: Any) -> tuple[int, ...]:
    if not text:
        return ()
    if isinstance(text, (list, tuple)):
        parts = list(text)
    else:
        parts = [p for p in str(text).split(",") if p.strip()]
    try:
        steps = tuple(sorted({int(p) for p in parts}))
    except ValueError:
        raise ConfigError(f"--snapshot-steps {text!r}: use comma-separated step numbers, e.g. 500,1000") from None
    if any(s < 0 for s in steps):
        raise ConfigError(f"--snapshot-steps {text!r}: steps must be >= 0")
    return steps


def print_summary(summary: dict[str, Any], out: Path | None) -> None:
    acc = summary.get("final_test_accuracy")
    best = summary.get("best_test_accuracy")
    where = f" in {out}" if out else ""
    if summary["status"] == RunStatus.DIVERGED:
        print(f"diverged at step {summary['diverged_step']}{where}")
        return
    print(f"{summary['status']}: {summary['steps']} steps, test accuracy {acc:.4f} (best {best:.4f}), "
          f"{summary['weights_nonzero']:,} of {summary['weights_total']:,} weights, {summary['wall_seconds']:.1f} s{where}")


def describe_args(kind: str, groups: tuple[type, ...], args: argparse.Namespace) -> RunDesc:
    """The run description of a command line: defaults < ``--config`` file < flags."""
    values = {k: v for k, v in vars(args).items() if k not in RUN_OPTION_NAMES and k not in ("handler", "command")}
    return RunDesc(kind, tuple(collect(groups, values, args.config)))


def cmd_train(args: argparse.Namespace) -> int:
    from sparsetopo.training.run import execute, place

    desc = describe_args("train", TRAIN_GROUPS, args)
    options = run_options(args)
    placed = place(desc, options.out)
    summary = execute(placed, options)
    print_summary(summary, placed.out)
    return 0 if summary["status"] == RunStatus.COMPLETED else 3


def cmd_inspect(args: argparse.Namespace) -> int:
    from sparsetopo.training.inspect import format_inspection, inspect_run

    report = inspect_run(Path(args.run))
    print(json.dumps(report, indent=2) if args.json else format_inspection(report))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="train a dense or sparse model",
        description="Train a model on a dataset. Without a budget it trains 20 epochs. Outputs in --out: "
        "hparams.json, metrics.jsonl, summary.json, checkpoint.pt. Exit status 0 when completed, 3 when the loss "
        "diverged (NaN/inf), 2 on bad input.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for cls in TRAIN_GROUPS:
        add_arguments(p, cls)
    add_run_options(p)
    p.set_defaults(handler=cmd_train)

    q = subparsers.add_parser("inspect", help="per-layer shape, nnz and density of a trained run (from its checkpoint)")
    q.add_argument("run", help="run directory")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_inspect)
