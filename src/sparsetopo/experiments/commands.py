"""CLI: ``sparsetopo sweep`` (``report`` and ``reproduce`` live with the report, which reads sweeps)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sparsetopo.errors import UserError
from sparsetopo.experiments.estimate import PROBE_STEPS, describe_plan
from sparsetopo.experiments.runner import BACKENDS, run_sweep
from sparsetopo.experiments.spec import Filter, find_experiment_file, load_experiment, parse_filter
from sparsetopo.experiments.worker import DEFAULT_RUN_FN


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _count(text: str) -> int:
    """Runs at a time, threads per run: 1 to 1024."""
    value = _positive(text)
    if value > 1024:
        raise argparse.ArgumentTypeError(f"{value} must be between 1 and 1024")
    return value


def _filter(text: str) -> Filter:
    try:
        return parse_filter(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sweep_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", help="profile of the experiment file: smoke (minutes, for CI), quick (an evening "
                                     "on a laptop) or paper (the full protocol) (default: the file's default_profile)")
    p.add_argument("--jobs", type=_count, help="runs at a time (default: as many as the cores, or the Ray "
                                                  "cluster's CPUs, hold at each run's thread count)")
    p.add_argument("--threads", type=_count, default=1,
                   help="CPU threads of each run that does not set its own (default 1). Part of every run's "
                        "name: the thread count changes the floating-point sums")
    p.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="device of each run that does not set its own: cpu (default), cuda, mps or auto (resolved "
                        "here, on the machine that starts the sweep); part of every run's name")
    p.add_argument("--backend", choices=BACKENDS, default="local", help="local processes or Ray tasks (default: local)")
    p.add_argument("--ray-address", metavar="ADDR", help="address of an existing Ray cluster (default: start a local "
                                                         "Ray instance)")
    p.add_argument("--data-dir", help="dataset root passed to every run (default: $SPARSETOPO_DATA, then the cache)")
    p.add_argument("--checkpoint-every", type=_positive, metavar="STEPS", help="checkpoint interval of every run")
    p.add_argument("--max-retries", type=int, default=2, help="times a run whose worker died is retried (default 2)")
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE", type=_filter,
                   help="run only the runs whose option KEY is VALUE, and the runs they need (repeatable: all must "
                        "hold), e.g. --only model=lenet300")
    p.add_argument("--run-fn", default=DEFAULT_RUN_FN, help=argparse.SUPPRESS)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sweep", help="run every run of an experiment file (skipping those already done)",
        description="Expand an experiment file's grid into runs named by a hash of their hyperparameters and run "
                    "them N at a time into DIR/runs/<id>, recording each in DIR/results.db. Runs already completed "
                    "are skipped; re-running an interrupted sweep resumes it.")
    p.add_argument("file", metavar="FILE", help="an experiment .toml file, or the name of a shipped one ("
                                               "fig7, fig8, fig9, ...)")
    sweep_options(p)
    p.add_argument("--dry-run", action="store_true", help="print the runs and the estimated cost; run nothing")
    dry_run_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (results.db and runs/)")
    p.set_defaults(handler=cmd_sweep)


def dry_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--estimate-from", metavar="DIR", help="with --dry-run: estimate from the run timings in DIR "
                                                          "(default: --out)")
    p.add_argument("--probe", nargs="?", type=_positive, const=PROBE_STEPS, metavar="STEPS",
                   help="with --dry-run: estimate from short runs of each kind of run, measured here one at a time "
                        f"first (STEPS and twice as many steps each; default {PROBE_STEPS}); minutes")


def dry_run(args: argparse.Namespace, experiments: list[Any]) -> int:
    if args.probe is not None and args.estimate_from is not None:
        raise UserError("--probe and --estimate-from are two ways to estimate; give one of them")
    print(describe_plan(experiments, args.out, estimate_from=args.estimate_from, only=args.only,
                        probe=args.probe, data_dir=args.data_dir))
    return 0


def load_experiments(names: list[str], profile: str | None, threads: int = 1, device: str = "cpu") -> list[Any]:
    from sparsetopo.training.hparams import parse_device, resolve_device

    kind = resolve_device(parse_device(device)).kind
    return [load_experiment(find_experiment_file(n), profile, threads, kind) for n in names]


def sweep(args: argparse.Namespace, experiments: list[Any]) -> int:
    if args.max_retries < 0:
        raise UserError(f"--max-retries {args.max_retries} is invalid: must be >= 0")
    result = run_sweep(experiments, args.out, jobs=args.jobs, backend=args.backend, ray_address=args.ray_address,
                       run_fn=args.run_fn, data_dir=args.data_dir,
                       checkpoint_every=args.checkpoint_every, max_retries=args.max_retries, only=args.only)
    print(f"sweep: {result.line()}; results in {Path(args.out) / 'results.db'}", file=sys.stderr)
    for rid, error in result.failures[:10]:
        print(f"sweep: failed {rid}: {error.splitlines()[0] if error else ''}", file=sys.stderr)
    return 0 if result.ok else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    experiments = load_experiments([args.file], args.profile, args.threads, args.device)
    if args.dry_run:
        return dry_run(args, experiments)
    return sweep(args, experiments)
