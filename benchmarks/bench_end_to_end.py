"""One MNIST epoch of a widened LeNet-300-100 on sparse layers: masked vs sparse, in separate processes.

The model is 784-H-100-10 with the 784xH and Hx100 layers sparse (Erdos-Renyi masks of the given
density) and the 100x10 output layer dense, trained with a plain loop (SGD, lr 0.1, momentum 0.9, batch
100). Each backend runs in its own process; the parent reports the child's wall time for the epoch, its
whole-process time, and its peak resident memory up to the end of training (``resource.getrusage``), plus
test accuracy.

    python benchmarks/bench_end_to_end.py                         # H=30000 (x100) at density 1/100
    python benchmarks/bench_end_to_end.py --hidden 1000000 --density 0.001 --backends sparse
    python benchmarks/bench_end_to_end.py --init-study            # init="dense" vs "sparse" (see docs)
    python benchmarks/bench_end_to_end.py --hidden 1000000 --density 0.001 --backends sparse --dst none,rigl

``--dst`` trains each backend once per method: ``none`` (the fixed random structure) and ``set`` / ``rigl``
(sparsetopo's DynamicSparsity callback after each optimiser step: an update every ``--dst-interval`` steps,
``--dst-fraction`` replaced at first, cosine decay to 75% of the epoch). The time spent in the updates is
reported beside the epoch's.

MNIST is read from ``$SPARSETOPO_DATA/mnist`` or ``/work/shared/data/mnist`` (the four IDX ``.gz`` files).
Writes ``benchmarks/results/bench_end_to_end.json`` (or ``bench_init_study.json``).
"""

from __future__ import annotations

import sparsetopo  # noqa: F401  first: it sets OMP_WAIT_POLICY=PASSIVE (fair sharing) before torch loads

# isort: split

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparsetopo.fileio import atomic_write_json
from sparsetopo.nn import SparseLinear, count_weights, kernels, sparse_layers
from sparsetopo.topology import random_topology
from sparsetopo.training.dst import DynamicSparsity

RESULTS = Path(__file__).parent / "results"


def mnist_dir() -> Path:
    for cand in (os.environ.get("SPARSETOPO_DATA"), "/work/shared/data"):
        if cand and (Path(cand) / "mnist" / "train-images-idx3-ubyte.gz").exists():
            return Path(cand) / "mnist"
    raise SystemExit("MNIST not found: set SPARSETOPO_DATA to a folder holding mnist/*.gz")


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    d = mnist_dir()
    xs = torch.from_numpy(read_idx(d / "train-images-idx3-ubyte.gz").reshape(-1, 784).copy())
    ys = torch.from_numpy(read_idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64))
    xt = torch.from_numpy(read_idx(d / "t10k-images-idx3-ubyte.gz").reshape(-1, 784).copy())
    yt = torch.from_numpy(read_idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    return xs, ys, xt, yt  # images stay uint8; batches are converted on the fly


MEAN, STD = 0.1307, 0.3081


def to_float(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - MEAN) / STD


def build_mlp(hidden: int, density: float, backend: str, init: str, seed: int) -> nn.Module:
    topo = random_topology([784, hidden, 100], density, seed=seed)
    torch.manual_seed(seed)
    return nn.Sequential(
        SparseLinear(784, hidden, topo.layers[0].T, backend=backend, init=init), nn.ReLU(),
        SparseLinear(hidden, 100, topo.layers[1].T, backend=backend, init=init), nn.ReLU(),
        nn.Linear(100, 10))


def train_epoch(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, lr: float, momentum: float,
                batch: int, seed: int, max_steps: int | None = None, dst: str = "none", dst_interval: int = 100,
                dst_fraction: float = 0.3) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(xs.shape[0], generator=g)
    total_steps = xs.shape[0] // batch if not max_steps else min(max_steps, xs.shape[0] // batch)
    updater = None if dst == "none" else DynamicSparsity(
        model, dst, interval=dst_interval, fraction=dst_fraction, end_step=int(0.75 * total_steps), seed=seed)
    losses = []
    steps = 0
    update_s = 0.0
    t0 = time.perf_counter()
    for i in range(0, xs.shape[0] - batch + 1, batch):
        idx = order[i:i + batch]
        loss = F.cross_entropy(model(to_float(xs[idx])), ys[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        if updater is not None:
            u0 = time.perf_counter()
            updater.on_step_end(steps, model, opt)
            update_s += time.perf_counter() - u0
        losses.append(loss.item())
        if max_steps and steps >= max_steps:
            break
    out = {"epoch_s": time.perf_counter() - t0, "steps": steps, "train_loss_last100": float(np.mean(losses[-100:]))}
    if updater is not None:
        out |= {"dst": dst, "dst_updates": len(updater.history), "dst_update_s": update_s, "dst_history": updater.history,
                "dst_changed": [round(float(np.mean([v["changed"] for v in h["layers"].values()])), 4)
                                for h in updater.history]}
        updater.remove()
    return out


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    correct = 0
    for i in range(0, x.shape[0], batch):
        correct += int((model(to_float(x[i:i + batch])).argmax(1) == y[i:i + batch]).sum())
    return correct / x.shape[0]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args: argparse.Namespace) -> int:
    """Run one backend in this process and print one JSON line."""
    t_start = time.perf_counter()
    xs, ys, xt, yt = load_mnist()
    # fixed runtime cost in both backends: torch, MNIST, and the kernels' code (numba) loaded
    kernels.spmm(np.array([0, 1]), np.array([0], dtype=np.int32), np.ones(1, np.float32),
                 np.ones((1, 2), np.float32))
    rss_data = peak_rss_mib()
    t0 = time.perf_counter()
    model = build_mlp(args.hidden, args.density, args.backend, args.init, args.seed)
    build_s = time.perf_counter() - t0
    rss_model = peak_rss_mib()
    total, nonzero = count_weights(model)
    stats = train_epoch(model, xs, ys, args.lr, args.momentum, args.batch, args.seed, args.max_steps,
                        dst=args.dst, dst_interval=args.dst_interval, dst_fraction=args.dst_fraction)
    rss_train = peak_rss_mib()  # high-water mark of loading + building + training (before evaluation)
    acc = accuracy(model, xt, yt, batch=args.batch)
    out = {"backend": args.backend, "dst": args.dst, "hidden": args.hidden, "density": args.density,
           "weights_total": total, "weights_nonzero": nonzero,
           "kernels": [m.kernel_name() for _, m in sparse_layers(model)],
           "build_s": build_s, **stats, "test_acc": acc,
           "process_s": time.perf_counter() - t_start,
           "peak_rss_mib": rss_train, "peak_rss_with_eval_mib": peak_rss_mib(), "rss_after_data_mib": rss_data,
           "rss_after_build_mib": rss_model,
           "threads": torch.get_num_threads()}
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def run_child(args: argparse.Namespace, backend: str, dst: str = "none") -> dict:
    cmd = [sys.executable, __file__, "--child", "--backend", backend, "--hidden", str(args.hidden),
           "--density", str(args.density), "--lr", str(args.lr), "--momentum", str(args.momentum),
           "--batch", str(args.batch), "--seed", str(args.seed), "--init", args.init, "--dst", dst,
           "--dst-interval", str(args.dst_interval), "--dst-fraction", str(args.dst_fraction)]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"backend": backend, "failed": True, "returncode": proc.returncode, "error": " | ".join(tail),
                "wall_s": wall}
    res = json.loads(lines[-1][len("RESULT "):])
    res["wall_s"] = wall
    return res


def end_to_end(args: argparse.Namespace) -> int:
    backends = args.backends.split(",")
    methods = args.dst.split(",")
    bad = [m for m in methods if m not in ("none", "set", "rigl")]
    if bad:
        raise SystemExit(f"--dst {args.dst}: {', '.join(bad)} is not a method; use none, set and rigl")
    configs = [(b, m) for b in backends for m in methods]
    label = {c: c[0] if methods == ["none"] else f"{c[0]}/{c[1]}" for c in configs}
    load = os.getloadavg()
    runs: dict[str, list[dict]] = {label[c]: [] for c in configs}
    for rep in range(args.repeats):
        for c in configs:
            name = label[c]
            r = run_child(args, *c)
            runs[name].append(r)
            if r.get("failed"):
                print(f"{name}: failed ({r['error']})", flush=True)
            else:
                extra = (f", {r['dst_updates']} updates in {r['dst_update_s']:.1f}s" if r.get("dst_updates") else "")
                print(f"{name:>7} run {rep + 1}: epoch {r['epoch_s']:.1f}s ({r['steps']} steps{extra}), process "
                      f"{r['wall_s']:.1f}s, peak RSS {r['peak_rss_mib']:.0f} MiB, test acc {r['test_acc']:.4f}, "
                      f"kernels {r['kernels']}", flush=True)

    def med(name: str, key: str) -> float | None:
        vals = [r[key] for r in runs[name] if not r.get("failed") and key in r]
        return float(np.median(vals)) if vals else None

    summary: dict = {name: {k: med(name, k) for k in ("epoch_s", "wall_s", "peak_rss_mib", "test_acc",
                                                      "rss_after_data_mib", "dst_update_s")} for name in runs}
    print(f"\n784-{args.hidden}-100-10, density {args.density}, batch {args.batch}, {args.repeats} run(s), "
          f"medians:")
    print(f"{'run':>12} {'epoch s':>9} {'updates s':>10} {'process s':>10} {'peak RSS MiB':>13} {'test acc':>9}")
    for name, s in summary.items():
        if s["epoch_s"] is None:
            print(f"{name:>12} {'failed':>9}")
            continue
        upd = "-" if s["dst_update_s"] is None else f"{s['dst_update_s']:.1f}"
        print(f"{name:>12} {s['epoch_s']:>9.1f} {upd:>10} {s['wall_s']:>10.1f} {s['peak_rss_mib']:>13.0f} "
              f"{s['test_acc']:>9.4f}")
    if "masked" in summary and "sparse" in summary and summary["masked"]["epoch_s"] and summary["sparse"]["epoch_s"]:
        m, s = summary["masked"], summary["sparse"]
        summary["speedup_epoch"] = m["epoch_s"] / s["epoch_s"]
        summary["rss_ratio"] = s["peak_rss_mib"] / m["peak_rss_mib"]
        base = s["rss_after_data_mib"]
        summary["rss_ratio_above_data"] = (s["peak_rss_mib"] - base) / max(m["peak_rss_mib"] - base, 1e-9)
        print(f"sparse vs masked: epoch x{summary['speedup_epoch']:.1f} faster, peak RSS "
              f"{summary['rss_ratio']:.2f} of masked ({summary['rss_ratio_above_data']:.3f} counting only "
              f"memory above the {base:.0f} MiB of torch + numba + MNIST)")
    for b in backends:
        static = summary.get(f"{b}/none")
        for m in methods:
            dyn = summary.get(f"{b}/{m}")
            if m == "none" or not static or not dyn or not static["epoch_s"] or not dyn["epoch_s"]:
                continue
            summary[f"{b}/{m}_vs_static"] = {"epoch_ratio": dyn["epoch_s"] / static["epoch_s"],
                                              "rss_ratio": dyn["peak_rss_mib"] / static["peak_rss_mib"],
                                              "test_acc_diff": dyn["test_acc"] - static["test_acc"]}
            print(f"{b}: {m} vs static: epoch x{dyn['epoch_s'] / static['epoch_s']:.2f}, peak RSS "
                  f"x{dyn['peak_rss_mib'] / static['peak_rss_mib']:.2f}, test accuracy "
                  f"{100 * (dyn['test_acc'] - static['test_acc']):+.2f} points")
    out = args.out or str(RESULTS / "bench_end_to_end.json")
    atomic_write_json(out, {"benchmark": "end_to_end", "argv": sys.argv[1:], "loadavg_before": load,
                            "loadavg_after": os.getloadavg(), "runs": runs, "summary": summary})
    print(f"wrote {out}")
    return 0


def init_study(args: argparse.Namespace) -> int:
    """784-300-100-10, ER masks at densities 0.1 and 0.01, 1 epoch SGD lr 0.1 batch 100, 2 seeds."""
    xs, ys, xt, yt = load_mnist()
    rows = []
    densities = [float(d) for d in args.densities.split(",")]
    print(f"{'density':>8} {'init':>7} {'seed':>4} {'test acc':>9} {'train loss':>11}")
    for density in densities:
        for init in ("dense", "sparse"):
            for seed in range(args.seeds):
                model = build_mlp(300, density, args.backend if args.backend != "auto" else "auto", init, seed)
                stats = train_epoch(model, xs, ys, lr=args.lr, momentum=0.0, batch=args.batch, seed=seed)
                acc = accuracy(model, xt, yt)
                rows.append({"density": density, "init": init, "seed": seed, "test_acc": acc, **stats})
                print(f"{density:>8} {init:>7} {seed:>4} {acc:>9.4f} {stats['train_loss_last100']:>11.4f}",
                      flush=True)
    print("\nmean test accuracy over seeds:")
    for density in densities:
        line = [f"density {density}:"]
        for init in ("dense", "sparse"):
            accs = [r["test_acc"] for r in rows if r["density"] == density and r["init"] == init]
            line.append(f"{init} {np.mean(accs):.4f} ({', '.join(f'{a:.4f}' for a in accs)})")
        print("  ".join(line))
    out = args.out or str(RESULTS / "bench_init_study.json")
    atomic_write_json(out, {"benchmark": "init_study", "argv": sys.argv[1:], "lr": args.lr, "momentum": 0.0,
                            "batch": args.batch, "epochs": 1, "rows": rows})
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=30000, help="hidden width H of 784-H-100-10 (default 30000)")
    p.add_argument("--density", type=float, default=0.01,
                   help="density of the two sparse layers (default 0.01)")
    p.add_argument("--backends", default="masked,sparse",
                   help="comma-separated backends, each run in its own process (default masked,sparse)")
    p.add_argument("--repeats", type=int, default=1, help="runs per backend, interleaved (median; default 1)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--batch", type=int, default=100, help="batch size (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed for masks, init and shuffling (default 0)")
    p.add_argument("--init", default="sparse", choices=["sparse", "dense"], help="weight init (default sparse)")
    p.add_argument("--max-steps", type=int, default=None, help="stop the epoch after this many steps")
    p.add_argument("--init-study", action="store_true",
                   help="compare init='dense' and init='sparse' on 784-300-100-10 instead")
    p.add_argument("--densities", default="0.1,0.01", help="densities for --init-study (default 0.1,0.01)")
    p.add_argument("--seeds", type=int, default=2, help="seeds for --init-study (default 2)")
    p.add_argument("--dst", default="none",
                   help="methods to train each backend with, comma-separated: none, set, rigl (default none)")
    p.add_argument("--dst-interval", type=int, default=100, help="steps between structure updates (default 100)")
    p.add_argument("--dst-fraction", type=float, default=0.3, help="fraction replaced at first (default 0.3)")
    p.add_argument("--out", default=None, help="JSON output path (default under benchmarks/results/)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="auto", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    if args.init_study:
        return init_study(args)
    return end_to_end(args)


if __name__ == "__main__":
    raise SystemExit(main())
