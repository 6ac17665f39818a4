"""``sparsetopo data verify`` and ``sparsetopo data download``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sparsetopo.data.download import download
from sparsetopo.data.files import resolve_root, root_origin, verify_dataset
from sparsetopo.data.registry import DATASETS, get_spec


def _datasets(name: str | None) -> list[str]:
    return [get_spec(name).name] if name else list(DATASETS)


def cmd_verify(args: argparse.Namespace) -> int:
    root = resolve_root(args.data_dir)
    bad = 0
    print(f"data root: {root}")
    for name in _datasets(args.dataset):
        spec = get_spec(name)
        for status in verify_dataset(spec, root):
            where = status.path if status.path else root / spec.folder / status.name
            detail = f"  ({status.detail})" if status.detail else ""
            print(f"{status.status:<8} {name:<14} {where}{detail}")
            bad += status.status != "ok"
    return 1 if bad else 0


def cmd_download(args: argparse.Namespace) -> int:
    root = resolve_root(args.data_dir)
    for name in _datasets(args.dataset):
        written = download(get_spec(name), root, mirror=args.mirror, progress=not args.quiet and sys.stderr.isatty(),
                           origin=root_origin(args.data_dir))
        print(f"{name}: " + (f"downloaded {len(written)} file(s) into {root / get_spec(name).folder}" if written
                             else "all files present"))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("data", help="check or download datasets")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dataset", choices=list(DATASETS), help="one dataset (default: all)")
    common.add_argument("--data-dir", help="data root (default: $SPARSETOPO_DATA, else ~/.cache/sparsetopo/data)")
    v = sub.add_parser("verify", parents=[common], help="check every file: present, parseable, right SHA-256",
                       description="Print ok / missing / corrupt for each file; exit 1 if any is not ok.")
    v.set_defaults(handler=cmd_verify)
    d = sub.add_parser("download", parents=[common], help="download missing files (verified before they are kept)")
    d.add_argument("--mirror", help="base URL laid out like a data root (default: $SPARSETOPO_MIRROR, else the "
                   "official sources)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(handler=cmd_download)
