"""``sparsetopo prune``."""

from __future__ import annotations

import argparse
from typing import Any

from sparsetopo.desc.hparams import add_arguments, load_toml
from sparsetopo.desc.status import RunStatus
from sparsetopo.pruning.hparams import PRUNE_GROUPS, PruneHparams
from sparsetopo.training.commands import RUN_OPTION_NAMES, add_run_options, describe_args, print_summary, run_options
from sparsetopo.training.hparams import TRAIN_GROUPS


def cmd_prune(args: argparse.Namespace) -> int:
    from sparsetopo.pruning.run import TOPOLOGY, run_prune

    desc = describe_args("prune", PRUNE_GROUPS, args)
    given = {k for k in vars(args) if k not in RUN_OPTION_NAMES} | (set(load_toml(args.config, PRUNE_GROUPS))
                                                                   if args.config else set())
    options = run_options(args)
    summary = run_prune(desc, options, given)
    print_summary(summary, options.out)
    if summary.get("pruned_test_accuracy") is not None:
        layers = ", ".join(f"{n} {s:.4f}" for n, s in summary["layer_sparsity"].items())
        print(f"pruned ({summary['method']}) to sparsity {summary['sparsity_reached']:.4f} ({layers}); test accuracy "
              f"before retraining {summary['pruned_test_accuracy']:.4f}; structure in {TOPOLOGY}")
    return 0 if summary["status"] == RunStatus.COMPLETED else 3


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "prune", help="magnitude-prune a network: gradually while training, or one-shot from a finished run",
        description="Gradual: train from dense and prune the smallest-magnitude weights every --frequency steps "
        "from --begin to --end on a cubic schedule to --sparsity (Zhu & Gupta 2017), then train to the end of the "
        "budget with the masks fixed. One-shot (--method oneshot --from DENSE_RUN): remove the smallest weights of "
        "a finished train run at once and measure the accuracy without retraining (training flags are then "
        "ignored). Layerwise by default (each layer to the target); --global ranks all pruned layers together. "
        "Outputs in --out: topology.npz (retrain it with 'train --topology file:OUT/topology.npz'), summary.json "
        "(pruned_test_accuracy, layer_sparsity), hparams.json, metrics.jsonl, checkpoint.pt. Exit status 0 when "
        "completed, 3 when the loss diverged, 2 on bad input.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for cls in (PruneHparams, *TRAIN_GROUPS):
        add_arguments(p, cls)
    add_run_options(p)
    p.set_defaults(handler=cmd_prune)
