"""Forward+backward of one sparse linear layer: masked (dense weight x mask) vs the sparse backend.

For each layer shape, batch size and sparsity, with an Erdos-Renyi mask and a RadiX-Net mask of the same
nnz, it times one forward + backward (output, input gradient, weight gradient) of:

* ``masked``: ``SparseLinear(backend="masked")``, the reference;
* ``dense``:  plain ``F.linear`` on a pre-masked dense weight (no mask multiply: a harder baseline);
* ``sparse``: ``SparseLinear(backend="sparse")`` (the RadiX mask runs the block kernel when it is detected),
  fed a batch-major input that is a leaf needing its gradient (two transposes and a layout copy included);
* ``stacked``: the same layer as it runs inside a stack of sparse layers, where activations and gradients
  arrive feature-major and nothing is transposed;
* ``auto``:   the backend ``SparseLinear(backend="auto")`` picks (it runs that backend's code); it must stay
  within 10% of masked.

Methods are interleaved, every timing is repeated and the median is reported; all ratios come from one
process on the same inputs. Prints a table and writes ``benchmarks/results/bench_kernels.json``.

    python benchmarks/bench_kernels.py            # the full grid (several minutes on 2 cores)
    python benchmarks/bench_kernels.py --quick    # a small subset
"""

from __future__ import annotations

import sparsetopo  # noqa: F401  first: it sets OMP_WAIT_POLICY=PASSIVE (fair sharing) before torch loads

# isort: split

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sparsetopo.fileio import atomic_write_json, atomic_write_text
from sparsetopo.nn import SparseLinear
from sparsetopo.topology import radix_net, random_topology

SHAPES = [(784, 300), (3000, 3000), (10000, 10000), (30000, 784)]  # (in, out)
BATCHES = [64, 256]
SPARSITIES = [0.5, 0.9, 0.99, 0.999]


def er_mask(n_in: int, n_out: int, density: float, seed: int):
    """Exact-count Erdos-Renyi mask (out x in, scipy CSR)."""
    topo = random_topology([n_in, n_out], density, seed=seed, mode="exact")
    return topo.layers[0].T.tocsr()


def radix_mask(n_in: int, n_out: int, density: float):
    """A one-layer RadiX-Net mask of exactly this shape and density, or None if none exists.

    Layer 0 of ``radix_net([(n, N'/n)], kron=(B_in, B_out, 1), trim_inputs=t)`` has density n/N' and shape
    (B_in N' - t) x (B_out N'); the smallest radix n >= 2 that fits gives the largest dense blocks.
    """
    inv = round(1 / density)
    if abs(inv * density - 1) > 1e-9:
        return None
    for n in range(2, 65):
        n_prime = n * inv
        if n_out % n_prime:
            continue
        b_out = n_out // n_prime
        b_in = -(-n_in // n_prime)
        trim = b_in * n_prime - n_in
        topo = radix_net([(n, inv)], (b_in, b_out, 1), trim_inputs=trim)
        layer = topo.layers[0]
        assert layer.shape == (n_in, n_out)
        return layer.T.tocsr(), {"radix": n, "N_prime": n_prime, "B_in": b_in, "B_out": b_out, "trim": trim}
    return None


CLOCK = time.perf_counter


def time_calls(fns: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median milliseconds per call of each function, interleaving them."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = CLOCK()
            fn()
            times[name].append((CLOCK() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def fwd_bwd(layer, x: torch.Tensor, gy: torch.Tensor):
    params = [p for p in layer.parameters()]

    def run() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        layer(x).backward(gy)
    return run


def dense_fwd_bwd(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, gy: torch.Tensor):
    def run() -> None:
        weight.grad = bias.grad = x.grad = None
        F.linear(x, weight, bias).backward(gy)
    return run


def bench_case(n_in: int, n_out: int, batch: int, sparsity: float, kind: str, mask, repeats: int,
               methods: list[str]) -> dict:
    density = 1 - sparsity
    torch.manual_seed(0)
    x = torch.randn(batch, n_in, requires_grad=True)
    gy = torch.randn(batch, n_out)
    fns = {}
    layers = {}
    auto_choice = SparseLinear(n_in, n_out, mask, backend="auto").backend
    for backend in ("masked", "sparse", "auto"):
        if backend in methods:
            torch.manual_seed(1)
            layers[backend] = SparseLinear(n_in, n_out, mask, backend=backend)
            fns[backend] = fwd_bwd(layers[backend], x, gy)
    if "stacked" in methods:  # the sparse layer inside a stack of sparse layers: feature-major in and out
        xt_leaf = x.detach().t().contiguous().requires_grad_(True)
        gy_fm = gy.t().contiguous().t()
        torch.manual_seed(1)
        layers["stacked"] = SparseLinear(n_in, n_out, mask, backend="sparse")
        layer_s = layers["stacked"]

        def stacked() -> None:
            for p in layer_s.parameters():
                p.grad = None
            xt_leaf.grad = None
            layer_s(xt_leaf.t()).backward(gy_fm)
        fns["stacked"] = stacked
    if "dense" in methods:
        ref = layers.get("masked") or SparseLinear(n_in, n_out, mask, backend="masked")
        w = ref.dense_weight().clone().requires_grad_(True)
        b = ref.bias.detach().clone().requires_grad_(True)
        fns["dense"] = dense_fwd_bwd(w, b, x, gy)
    ms = time_calls(fns, repeats)
    if "auto" not in ms and auto_choice in ms:  # auto runs exactly the chosen backend's code
        ms["auto"] = ms[auto_choice]
    nnz = int(mask.nnz)
    row = {"in": n_in, "out": n_out, "batch": batch, "sparsity": sparsity, "mask": kind, "nnz": nnz,
           "flop_bound": 1 / density, "ms": ms}
    if "masked" in ms:
        for k in ms:
            if k != "masked":
                row[f"ratio_{k}"] = ms["masked"] / ms[k]
    if "dense" in ms and "sparse" in ms:
        row["ratio_sparse_vs_dense"] = ms["dense"] / ms["sparse"]
    if "sparse" in layers:
        row["kernel"] = layers["sparse"].kernel_name()
    row["auto_backend"] = auto_choice
    flops = 3 * 2 * nnz * batch
    if "sparse" in ms:
        row["sparse_gflops"] = flops / ms["sparse"] / 1e6
    if "dense" in ms:
        row["dense_gflops"] = 3 * 2 * n_in * n_out * batch / ms["dense"] / 1e6
    return row


CONV_CASES = [  # (in_ch, out_ch, kernel, input hw, channel density): LeNet-5's conv2 and its widenings
    (6, 16, 5, 14, 0.5), (6, 160, 5, 14, 0.1), (6, 1600, 5, 14, 0.01), (16, 16, 5, 14, 0.5),
    (64, 64, 3, 16, 0.1), (256, 256, 3, 8, 0.01), (256, 256, 3, 8, 0.1), (128, 128, 3, 16, 0.1),
    (20, 500, 5, 14, 0.1),  # LeNet-5 x10's conv2 on CIFAR-10
]


def bench_conv(batch: int, repeats: int) -> list[dict]:
    """SparseConv2d with Erdos-Renyi channel masks: masked (dense conv2d) vs sparse (unfold + CSR)."""
    from sparsetopo.nn import SparseConv2d
    rows = []
    print(f"\nconv, batch {batch}: {'in':>4} {'out':>5} {'k':>2} {'hw':>3} {'density':>8} | {'masked':>8} "
          f"{'sparse':>8} {'auto':>8} | {'x masked':>8} auto")
    for cin, cout, k, hw, density in CONV_CASES:
        cm = er_mask(cin, cout, density, seed=0)
        torch.manual_seed(0)
        x = torch.randn(batch, cin, hw, hw, requires_grad=True)
        layers = {b: SparseConv2d(cin, cout, k, cm, padding=0, backend=b) for b in ("masked", "sparse", "auto")}
        gy = torch.randn_like(layers["masked"](x))
        ms = time_calls({b: fwd_bwd(layers[b], x, gy) for b in ("masked", "sparse")}, repeats)
        ms["auto"] = ms[layers["auto"].backend]
        row = {"in_ch": cin, "out_ch": cout, "kernel": k, "hw": hw, "density": density, "batch": batch,
               "ms": ms, "ratio_sparse": ms["masked"] / ms["sparse"], "ratio_auto": ms["masked"] / ms["auto"],
               "auto_backend": layers["auto"].backend, "kernel_path": layers["sparse"].kernel_name()}
        rows.append(row)
        print(f"{'':>16} {cin:>4} {cout:>5} {k:>2} {hw:>3} {density:>8} | {ms['masked']:>8.2f} "
              f"{ms['sparse']:>8.2f} {ms['auto']:>8.2f} | {row['ratio_sparse']:>8.2f} {row['auto_backend']}",
              flush=True)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The linear-layer rows as a Markdown table (the one in README.md and docs/sparse-compute.md)."""
    def ms(row: dict, key: str) -> str:
        return f"{row['ms'][key]:.2f}" if key in row["ms"] else "-"

    def ratio(row: dict, key: str) -> str:
        return f"{row[key]:.1f}" if key in row else "-"
    out = ["| layer (in x out) | batch | sparsity | mask | masked ms | sparse ms | stacked ms | x masked | "
           "x masked, stacked | FLOP bound | kernel |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['in']}x{r['out']} | {r['batch']} | {r['sparsity']} | {r['mask']} | {ms(r, 'masked')} | "
                   f"{ms(r, 'sparse')} | {ms(r, 'stacked')} | {ratio(r, 'ratio_sparse')} | "
                   f"{ratio(r, 'ratio_stacked')} | {r['flop_bound']:.0f} | {r.get('kernel', '')} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a small subset: 784x300 and 3000x3000, batch 256")
    p.add_argument("--shapes", default=None,
                   help="comma-separated INxOUT layer shapes (default: 784x300,3000x3000,10000x10000,30000x784)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default: 64,256)")
    p.add_argument("--sparsities", default=None, help="comma-separated sparsities (default: 0.5,0.9,0.99,0.999)")
    p.add_argument("--masks", default="er,radix", help="mask kinds to run: er, radix (default: both)")
    p.add_argument("--methods", default="masked,dense,sparse,stacked",
                   help="methods to time: masked, dense, sparse, stacked, auto (default: masked,dense,sparse,"
                        "stacked; the auto column then reports the time of the backend auto picks, which runs "
                        "the same code)")
    p.add_argument("--repeats", type=int, default=7, help="timed repetitions per method (median; default 7)")
    p.add_argument("--threads", type=int, default=None, help="torch/numba threads (default: torch's)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_kernels.json"),
                   help="JSON output path (default: benchmarks/results/bench_kernels.json)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time (default); cpu: CPU time of the calling thread "
                        "(only meaningful with --threads 1, where it is robust to other jobs sharing the machine)")
    p.add_argument("--conv", action="store_true",
                   help="also time SparseConv2d on LeNet-5-like channel masks (batch 100)")
    p.add_argument("--conv-only", action="store_true", help="only the conv cases")
    p.add_argument("--markdown", default=None, metavar="PATH",
                   help="also write the linear-layer rows as a Markdown table to PATH")
    args = p.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.thread_time
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = SHAPES
    batches, sparsities = BATCHES, SPARSITIES
    if args.quick:
        shapes, batches = [(784, 300), (3000, 3000)], [256]
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]
    if args.sparsities:
        sparsities = [float(s) for s in args.sparsities.split(",")]
    kinds = args.masks.split(",")
    methods = args.methods.split(",")

    load_before = os.getloadavg()
    rows = []
    if args.conv_only:
        shapes = []
    hdr = (f"{'layer':>12} {'batch':>5} {'spars':>6} {'mask':>5} {'nnz':>9} | {'masked':>9} {'dense':>9} "
           f"{'sparse':>8} {'stacked':>8} | {'x masked':>8} {'x stack':>7} {'x dense':>7} {'bound':>6} {'GF/s':>5} "
           f"kernel")
    print(hdr)
    print("-" * len(hdr))
    for n_in, n_out in shapes:
        for sparsity in sparsities:
            masks = []
            if "er" in kinds:
                masks.append(("er", er_mask(n_in, n_out, 1 - sparsity, seed=0), {}))
            if "radix" in kinds:
                rm = radix_mask(n_in, n_out, 1 - sparsity)
                if rm is not None:
                    masks.append(("radix", rm[0], rm[1]))
            for batch in batches:
                for kind, mask, info in masks:
                    row = bench_case(n_in, n_out, batch, sparsity, kind, mask, args.repeats, methods)
                    row["mask_info"] = info
                    rows.append(row)
                    ms = row["ms"]

                    def f(k: str, width: int, fmt: str = ".2f") -> str:
                        return f"{ms[k]:>{width}{fmt}}" if k in ms else " " * (width - 1) + "-"
                    print(f"{n_in:>5}x{n_out:<6} {batch:>5} {sparsity:>6} {kind:>5} {row['nnz']:>9} | "
                          f"{f('masked', 9)} {f('dense', 9)} {f('sparse', 8)} {f('stacked', 8)} | "
                          f"{row.get('ratio_sparse', float('nan')):>8.1f} "
                          f"{row.get('ratio_stacked', float('nan')):>7.1f} "
                          f"{row.get('ratio_sparse_vs_dense', float('nan')):>7.1f} {row['flop_bound']:>6.0f} "
                          f"{row.get('sparse_gflops', float('nan')):>5.1f} {row.get('kernel', '')}"
                          f"{' auto=' + row['auto_backend'] if 'auto_backend' in row else ''}", flush=True)
    conv_rows = bench_conv(100, args.repeats) if (args.conv or args.conv_only) else []
    result = {
        "benchmark": "kernels", "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor(),
        "cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "repeats": args.repeats, "clock": args.clock, "rows": rows, "conv_rows": conv_rows,
    }
    atomic_write_json(args.out, result)
    if args.markdown:
        atomic_write_text(args.markdown, markdown_table(rows))
    print(f"\nwrote {args.out}; load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
