"""GPU throughput (CUDA), as same-run ratios and absolute times.

Rows:

- ``layer``: one linear layer, forward + backward (output, input gradient, weight gradient), float32, for
  plain dense ``nn.Linear`` on the masked weight, the ``masked`` backend and the ``sparse`` backend (torch's
  CSR kernels on CUDA; RadiX-Net masks through their dense blocks), the same weights, input and output
  gradient for all, each checked against masked before timing; ms per pass from CUDA events, medians.
- ``model``: one training step (SGD, batch 100, random MNIST- or CIFAR-shaped data resident on the GPU) of
  LeNet-5 and LeNet-5 x10 / x100 at density 1/K (``--scale connections:K``), masked and sparse backends,
  and dense LeNet-5; the projected time of a 12,000-step run at that rate (evaluation not included).

Needs a CUDA device; says so and exits 2 without one.

    python benchmarks/bench_gpu.py [--rows layer,model] [--shapes 3000x3000:256,10000x10000:256]
        [--sparsities 0.9,0.99,0.999] [--repeats 20] [--json F] [--markdown F]
"""

from __future__ import annotations

import sparsetopo  # noqa: F401  first: it sets OMP_WAIT_POLICY=PASSIVE (fair sharing) before torch loads

# isort: split

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench_peers import mask_for, parse_shapes  # the CPU benchmarks' ER and RadiX masks and --shapes
from sparsetopo.nn import SparseLinear

DEVICE = torch.device("cuda")


def cuda_ms(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` from CUDA events, after ``warmup`` calls (wall clock on the CPU, where
    ``--device cpu`` only checks the script)."""
    for _ in range(warmup):
        fn()
    times = []
    if DEVICE.type != "cuda":
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
        return statistics.median(times)
    torch.cuda.synchronize()
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def step_ms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """Median milliseconds of one SGD training step of ``model`` on the batch ``(x, y)``."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return cuda_ms(step, repeats)


def layer_rows(shapes: list[tuple[int, int, int]], sparsities: list[float], repeats: int) -> list[dict[str, Any]]:
    rows = []
    dev = DEVICE
    for n_in, n_out, batch in shapes:
        for sparsity in sparsities:
            for kind in ("er", "radix"):
                mask = mask_for(kind, n_in, n_out, sparsity)
                if mask is None:
                    continue
                torch.manual_seed(0)
                masked = SparseLinear(n_in, n_out, mask, backend="masked").to(dev)
                torch.manual_seed(0)
                sparse = SparseLinear(n_in, n_out, mask, backend="sparse").to(dev)  # the same initial weights
                dense = nn.Linear(n_in, n_out).to(dev)
                with torch.no_grad():
                    dense.weight.copy_(masked.dense_weight())
                    dense.bias.copy_(masked.bias)
                x = torch.randn(batch, n_in, device=dev)
                gy = torch.randn(batch, n_out, device=dev)

                def step(layer: nn.Module) -> Callable[[], torch.Tensor]:
                    def run() -> torch.Tensor:
                        xi = x.detach().requires_grad_(True)
                        layer.zero_grad(set_to_none=True)
                        y = layer(xi)
                        y.backward(gy)
                        return y.detach()
                    return run

                ref = step(masked)()
                for layer in (sparse, dense):
                    torch.testing.assert_close(step(layer)(), ref, rtol=1e-3, atol=1e-3)
                ms = {name: cuda_ms(step(layer), repeats) for name, layer in
                      (("dense", dense), ("masked", masked), ("sparse", sparse))}
                rows.append({"row": "layer", "shape": f"{n_in}x{n_out}", "batch": batch, "sparsity": sparsity,
                             "mask": kind, **{f"{k}_ms": v for k, v in ms.items()},
                             "sparse_vs_dense": ms["dense"] / ms["sparse"],
                             "sparse_vs_masked": ms["masked"] / ms["sparse"]})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def peak_mib() -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if DEVICE.type == "cuda" else float("nan")


MODELS = [("mnist", None), ("mnist", 10), ("cifar10", 10), ("mnist", 100), ("cifar10", 100)]


def model_rows(repeats: int) -> list[dict[str, Any]]:
    from sparsetopo.runs import describe
    from sparsetopo.training.hparams import ModelHparams
    from sparsetopo.training.run import build_network, network_for

    rows = []
    dev = DEVICE
    for dataset, k in MODELS:
        shape = (1, 28, 28) if dataset == "mnist" else (3, 32, 32)
        x = torch.randn(100, *shape, device=dev)
        y = torch.randint(0, 10, (100,), device=dev)
        for backend in (("masked", "sparse") if k else ("dense",)):
            params = {"model": "lenet5", "dataset": dataset}
            if k:
                params.update(topology="random", scale=f"connections:{k}", backend=backend)
            mh = describe("train", params).group(ModelHparams)
            model = build_network(mh, network_for(mh, dataset), device=dev.type).to(dev)
            ms = step_ms(model, x, y, repeats)
            rows.append({"row": "model", "model": f"lenet5 x{k}" if k else "lenet5", "dataset": dataset,
                         "backend": backend, "ms_per_step": ms, "run_12000_steps_s": ms * 12000 / 1000,
                         "peak_memory_mib": peak_mib()})
            print(json.dumps(rows[-1]), flush=True)
            del model
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = []
    layer = [r for r in rows if r["row"] == "layer"]
    if layer:
        lines += ["| layer, batch, sparsity, mask | dense nn.Linear ms | masked ms | sparse ms | sparse vs dense "
                  "| sparse vs masked |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['shape']}, {r['batch']}, {r['sparsity']}, {r['mask']} | {r['dense_ms']:.3f} | "
                  f"{r['masked_ms']:.3f} | {r['sparse_ms']:.3f} | x{r['sparse_vs_dense']:.2f} | "
                  f"x{r['sparse_vs_masked']:.2f} |" for r in layer]
        lines.append("")
    model = [r for r in rows if r["row"] == "model"]
    if model:
        lines += ["| model, dataset | backend | ms per step | 12,000 steps | peak GPU memory |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['model']}, {r['dataset']} | {r['backend']} | {r['ms_per_step']:.2f} | "
                  f"{r['run_12000_steps_s']:.0f} s | {r['peak_memory_mib']:.0f} MiB |" for r in model]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="layer,model")
    ap.add_argument("--shapes", default="784x300:100,3000x3000:256,10000x10000:256")
    ap.add_argument("--sparsities", default="0.9,0.99,0.999")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only checks the script")
    ap.add_argument("--models", default="", help="only these (dataset:K, K 0 for dense), e.g. mnist:0,mnist:10")
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.models:
        MODELS[:] = [(d, int(k) or None) for d, _, k in (m.partition(":") for m in args.models.split(","))]
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device is visible to this process", file=sys.stderr)
        return 2
    wanted = set(args.rows.split(","))
    unknown = wanted - {"layer", "model"}
    if unknown:
        print(f"bench_gpu: --rows {sorted(unknown)}: choose from layer, model", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    if "layer" in wanted:
        rows += layer_rows(parse_shapes(args.shapes), [float(s) for s in args.sparsities.split(",")], args.repeats)
    if "model" in wanted:
        rows += model_rows(args.repeats)
    meta = {"device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu", "torch": torch.__version__, "load_average": os.getloadavg()[0]}
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    text = markdown(rows)
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
