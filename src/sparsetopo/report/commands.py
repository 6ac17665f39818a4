"""CLI: ``sparsetopo report`` (a sweep's results as figures and tables) and ``sparsetopo reproduce`` (sweep
the shipped experiment files, then report)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from sparsetopo.errors import UserError
from sparsetopo.experiments.commands import dry_run, dry_run_options, load_experiments, sweep, sweep_options
from sparsetopo.experiments.spec import shipped_names


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="figures, tables and a Markdown page from a sweep's results",
        description="Read DIR/results.db and write REPORT/index.md, REPORT/figures/*.png|svg and "
                    "REPORT/tables/*.csv|md: Fig. 7, 8 and 9 of the paper, training-instability figures, mean ± std "
                    "tables and the paper's findings beside ours.")
    p.add_argument("dir", metavar="DIR", help="the --out directory of one or more sweeps")
    p.add_argument("--out", required=True, metavar="REPORT", help="folder for the report")
    p.add_argument("--experiment", action="append", metavar="NAME", help="only this experiment (repeatable)")
    p.set_defaults(handler=cmd_report)

    p = subparsers.add_parser(
        "reproduce", help="sweep and report the paper's figures with the shipped experiment files",
        description="Run the shipped experiment files (fig7, fig8, fig9 or all of them, extensions included) into "
                    "DIR and write the report to DIR/report. Interrupted? Run the same command again.")
    p.add_argument("what", metavar="WHAT", help="fig7 | fig8 | fig9 | all | the name of another shipped file, or "
                                                "several names joined by commas (fig7,fig8,fig9,lr)")
    sweep_options(p)
    p.add_argument("--dry-run", action="store_true", help="print the runs and the estimated cost; run nothing")
    dry_run_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.set_defaults(handler=cmd_reproduce)


def cmd_report(args: argparse.Namespace) -> int:
    from sparsetopo.report import write_report  # matplotlib: only when a report is written

    index = write_report(args.dir, args.out, args.experiment)
    print(f"report: {index}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from sparsetopo.report import write_report

    names = shipped_names()
    if args.what == "all":
        chosen = names
    else:
        chosen = [n.strip() for n in args.what.split(",")]
        bad = [n for n in chosen if n not in names]
        if bad or not chosen:
            raise UserError(f"reproduce {args.what!r}: {', '.join(bad) or 'nothing'} is not a shipped file; choose all "
                            f"or names among: {', '.join(names)}")
    experiments = load_experiments(chosen, args.profile, args.threads, args.device)  # every file is validated before anything runs
    if args.dry_run:
        return dry_run(args, experiments)
    t0 = time.time()
    code = sweep(args, experiments)
    index = write_report(args.out, Path(args.out) / "report", [e.name for e in experiments])
    print(f"reproduce: report in {index} ({time.time() - t0:.0f} s in all)")
    return code
