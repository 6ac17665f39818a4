"""``sparsetopo topology radix | random | show``: build, describe, save and draw topologies."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sparsetopo.errors import ConfigError
from sparsetopo.topology.core import Topology
from sparsetopo.topology.io import load_topology, save_topology
from sparsetopo.topology.radix import radix_net
from sparsetopo.topology.randomnets import MODES, random_equivalent, random_topology


def _int_list(text: str, sep: str, what: str) -> list[int]:
    parts = text.lower().split(sep)
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{what} {text!r} must be integers separated by {sep!r}, e.g. {sep.join(['10', '10'])}") from None
    return values


def _float_list(text: str, what: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",")]
    except ValueError:
        raise ConfigError(f"{what} {text!r} must be a number or comma-separated numbers, e.g. 0.1 or 0.1,0.05") from None


def _check_png(path: str | None, compare_seed: int | None = None) -> None:
    if path is not None and not path.lower().endswith(".png"):
        raise ConfigError(f"--plot file {path!r} must end in .png")
    if compare_seed is not None and compare_seed < 0:
        raise ConfigError(f"--compare-seed {compare_seed} must be a non-negative integer")


# With --paths auto, path statistics are skipped above this many estimated multiply-adds (about 10 s here).
AUTO_PATH_COST = 5_000_000_000


def report(topo: Topology, paths: bool = True) -> dict[str, Any]:
    """The JSON-able description printed by the commands: meta, per-layer summary and path statistics."""
    out: dict[str, Any] = {
        "meta": topo.meta,
        "layers": topo.summary(),
        "total_nnz": topo.total_nnz,
        "overall_density": topo.overall_density,
    }
    if paths:
        lo, hi = topo.path_counts()
        out["paths"] = {"min": lo, "max": hi, "symmetric": lo == hi, "path_connected": lo > 0}
    return out


def format_report(rep: dict[str, Any]) -> str:
    header = ["layer", "name", "shape", "nnz", "density", "in-degree", "out-degree", "kernel"]
    rows = []
    for row in rep["layers"]:
        rows.append([
            str(row["index"]),
            row["name"] or "-",
            f"{row['shape'][0]}x{row['shape'][1]}",
            f"{row['nnz']:,}",
            f"{row['density']:.4g}",
            f"{row['in_degree'][0]}..{row['in_degree'][1]}",
            f"{row['out_degree'][0]}..{row['out_degree'][1]}",
            "-" if row["kernel"] is None else f"{row['kernel'][0]}x{row['kernel'][1]} ({row['weights']:,} weights)",
        ])
    rows.append(["total", "", "", f"{rep['total_nnz']:,}", f"{rep['overall_density']:.4g}", "", "", ""])
    widths = [max(len(r[c]) for r in [header] + rows) for c in range(len(header))]
    lines = []
    meta = rep["meta"]
    if meta:
        lines.append("topology: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(meta.items()) if k != "of"))
    for r in [header] + rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    if "paths_skipped" in rep:
        lines.append(f"input-to-output paths: skipped ({rep['paths_skipped']})")
    if "paths" in rep:
        p = rep["paths"]
        kind = "symmetric" if p["symmetric"] else "not symmetric"
        conn = "yes" if p["path_connected"] else "no"
        lines.append(f"input-to-output paths: min {p['min']:,}, max {p['max']:,} ({kind}); path-connected: {conn}")
    return "\n".join(lines)


def _emit(topo: Topology, args: argparse.Namespace) -> int:
    log = sys.stderr if args.json else sys.stdout
    cost = topo.path_count_cost()
    paths = args.paths == "yes" or (args.paths == "auto" and cost <= AUTO_PATH_COST)
    rep = report(topo, paths=paths)
    if args.paths == "auto" and not paths:
        rep["paths_skipped"] = f"about {cost:.2g} multiply-adds; pass --paths yes to compute them"
    if args.json:
        print(json.dumps(rep, indent=2, sort_keys=True))
    else:
        print(format_report(rep))
    if getattr(args, "save", None):
        save_topology(topo, args.save)
        print(f"saved {args.save}", file=log)
    if args.plot:
        from sparsetopo.topology.plot import plot_topologies

        if args.compare_seed is not None:
            other = random_equivalent(topo, args.compare_seed)
            plot_topologies([topo, other], args.plot, titles=[_title(topo), f"random equivalent (seed {args.compare_seed})"])
        else:
            plot_topologies([topo], args.plot, titles=[_title(topo)])
        print(f"plotted {args.plot}", file=log)
    return 0


def _title(topo: Topology) -> str:
    kind = topo.meta.get("kind")
    if kind == "radix_net":
        return f"RadiX-Net {topo.meta.get('systems')}, kron {topo.meta.get('kron')}"
    if kind == "random":
        return f"random ({topo.meta.get('mode')}, seed {topo.meta.get('seed')})"
    return str(kind or "topology")


def cmd_radix(args: argparse.Namespace) -> int:
    systems = [_int_list(s, "x", "--systems") for s in args.systems]
    kron = _int_list(args.kron, "x", "--kron") if args.kron is not None else None
    _check_png(args.plot, args.compare_seed)
    topo = radix_net(systems, kron, args.trim)
    return _emit(topo, args)


def cmd_random(args: argparse.Namespace) -> int:
    sizes = _int_list(args.sizes, ",", "--sizes")
    dens = _float_list(args.density, "--density")
    _check_png(args.plot, args.compare_seed)
    density: float | list[float] = dens[0] if len(dens) == 1 else dens
    topo = random_topology(sizes, density, args.seed, mode=args.mode)
    return _emit(topo, args)


def cmd_show(args: argparse.Namespace) -> int:
    _check_png(args.plot, args.compare_seed)
    topo = load_topology(args.file)
    return _emit(topo, args)


def _common(p: argparse.ArgumentParser, save: bool = True) -> None:
    if save:
        p.add_argument("--save", metavar="FILE", help="write the topology to FILE (.npz of index arrays plus JSON "
                       "metadata; reload with 'sparsetopo topology show FILE')")
    p.add_argument("--plot", metavar="FILE.png", help="draw the topology into a PNG: small nets as layered bipartite "
                   "graphs, large ones as adjacency (spy) plots")
    p.add_argument("--json", action="store_true", help="print the description as JSON instead of a table")
    p.add_argument("--paths", choices=("auto", "yes", "no"), default="auto",
                   help="compute the input-to-output path statistics (min/max path count, symmetric, path-connected): "
                        "'auto' (default) skips them when they would need more than about "
                        f"{AUTO_PATH_COST:.0e} multiply-adds (the smaller end's width times the edges)")


def register(subparsers: Any) -> None:
    top = subparsers.add_parser(
        "topology", help="build, describe, save and draw sparse topologies",
        description="Build exact RadiX-Nets and random sparse topologies, print per-layer statistics "
                    "(shape, nnz, density, degree ranges) and input-to-output path counts, save and plot them.",
    )
    sub = top.add_subparsers(dest="topology_command", metavar="SUBCOMMAND")
    sub.required = True

    r = sub.add_parser(
        "radix", help="an exact RadiX-Net from mixed-radix systems and Kronecker widths",
        description="Build the RadiX-Net of one or more mixed-radix systems. Layer i connects x to y when "
                    "(x - y) mod N' is a multiple 0, p, ..., (n-1)p of its place value p, Kronecker-expanded by "
                    "ones(B_i, B_i+1). Example: --systems 10x10 --kron 8x3x1 --trim 16 gives 784x300x100 at 10% density.",
    )
    r.add_argument("--systems", action="append", required=True, metavar="N1xN2x...",
                   help="a mixed-radix system, radices separated by 'x' (e.g. 10x10); repeat for several systems: "
                        "all but the last must have the same product N', the last's product must divide N'")
    r.add_argument("--kron", metavar="B1xB2x...", default=None,
                   help="Kronecker widths B_1..B_{M+1} for M layers, separated by 'x' (default: all 1)")
    r.add_argument("--trim", type=int, default=0, metavar="K",
                   help="remove input neurons 0..K-1 of the first layer (e.g. 16 to match MNIST's 784 inputs; default 0)")
    r.add_argument("--compare-seed", type=int, default=0, metavar="SEED",
                   help="seed of the random equivalent drawn beside the RadiX-Net by --plot (default 0)")
    _common(r)
    r.set_defaults(handler=cmd_radix)

    q = sub.add_parser(
        "random", help="a random sparse topology (Bernoulli, exact count or fixed fan-in)",
        description="Build a random sparse topology. Modes: bernoulli (each edge independently with probability "
                    "DENSITY), exact (exactly DENSITY*n_in*n_out edges per layer, rounded half up), fanin (every output gets "
                    "DENSITY*n_in inputs, rounded half up). The same seed gives the same topology.",
    )
    q.add_argument("--sizes", required=True, metavar="N0,N1,...", help="layer widths, comma-separated (e.g. 784,300,100)")
    q.add_argument("--density", required=True, metavar="D",
                   help="edge density in (0, 1]: one value, or one per layer comma-separated (e.g. 0.1,0.05)")
    q.add_argument("--seed", type=int, default=0, help="random seed, a non-negative integer (default 0)")
    q.add_argument("--mode", choices=MODES, default="bernoulli", help="how edges are drawn (default bernoulli)")
    _common(q)
    q.set_defaults(handler=cmd_random, compare_seed=None)

    s = sub.add_parser("show", help="describe a saved topology file",
                       description="Print the per-layer table and path statistics of a topology saved with --save "
                                   "or Topology.save.")
    s.add_argument("file", metavar="FILE", help="a topology .npz file")
    _common(s, save=False)
    s.add_argument("--compare-seed", type=int, default=None, metavar="SEED",
                   help="with --plot, also draw a random equivalent with this seed beside the topology")
    s.set_defaults(handler=cmd_show)
