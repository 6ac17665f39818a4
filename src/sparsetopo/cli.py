"""The ``sparsetopo`` command line: a thin dispatcher over the packages' own ``commands`` modules.

Each package that offers commands has a ``commands.py`` with ``register(subparsers)``; registering a
command adds a sub-parser whose ``handler`` default takes the parsed namespace and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from sparsetopo.errors import UserError
from sparsetopo.version import __version__

# Packages whose ``commands.register`` adds sub-commands, in help order.
COMMAND_MODULES = (
    "sparsetopo.training.commands",      # train, inspect
    "sparsetopo.data.commands",          # data verify / download
    "sparsetopo.topology.commands",      # topology radix / random / show
    "sparsetopo.pruning.commands",       # prune
    "sparsetopo.experiments.commands",   # sweep
    "sparsetopo.report.commands",        # report, reproduce
    "sparsetopo.challenge.commands",     # challenge ...
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparsetopo",
        description="Build, train and study sparse neural network topologies.",
    )
    parser.add_argument("--version", action="version", version=f"sparsetopo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a package not present in this build
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"sparsetopo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sparsetopo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
