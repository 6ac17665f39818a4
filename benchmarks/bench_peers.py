"""One sparse linear layer, forward + backward (y, dx, dW), against what a user would pick instead: plain
dense ``nn.Linear``, the masked reference, torch's own sparse tensors, and the CPU sparse-training
libraries ``sparselab`` and ``sparseprop`` (a benchmark-only extra: ``pip install -e '.[bench]'``; sparseprop
builds from source and needs ``pip install pybind11 && pip install --no-build-isolation sparseprop``).

Every implementation gets the same mask (Erdős–Rényi or a RadiX-Net of the same nnz), the same weight
values, input and output gradient; its output is checked against the masked reference before it is timed;
all are interleaved in one process, same thread count, and the median of ``--repeats`` is reported. A peer
that is not installed is skipped, and the table says so.

    python benchmarks/bench_peers.py [--shapes 784x300:100,3000x3000:256] [--sparsities 0.9,0.99,0.999]
                                     [--masks er,radix] [--repeats 9] [--threads 2] [--markdown PATH]
"""

from __future__ import annotations

import sparsetopo  # noqa: F401  first: it sets OMP_WAIT_POLICY=PASSIVE (fair sharing) before torch loads

# isort: split

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from bench_kernels import radix_mask
from sparsetopo.nn import SparseLinear
from sparsetopo.topology import random_topology

Step = Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # returns (y, dx, dW-like)


def mask_for(kind: str, n_in: int, n_out: int, sparsity: float, seed: int = 0) -> sp.csr_array | None:
    """An (out x in) mask: ER at the density, or a RadiX-Net layer of that density and shape (the kernels
    benchmark's construction; None where no RadiX layer has that shape and density)."""
    density = 1.0 - sparsity
    if kind == "er":
        return sp.csr_array(random_topology([n_in, n_out], density, seed=seed).layers[0].T)
    found = radix_mask(n_in, n_out, density)
    return None if found is None else sp.csr_array(found[0])


def _time(step: Step, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def implementations(mask: sp.csr_array, values: np.ndarray, bias: torch.Tensor, x: torch.Tensor,
                    dy: torch.Tensor) -> dict[str, Step | str]:
    """name -> a fwd+bwd step, or the reason the implementation is not there."""
    n_out, n_in = mask.shape
    dense_w = torch.zeros(n_out, n_in)
    coo = mask.tocoo()
    dense_w[torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))] = \
        torch.from_numpy(values)
    out: dict[str, Step | str] = {}

    def module_step(module: nn.Module, weight: Callable[[], torch.Tensor]) -> Step:
        def step() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            xi = x.detach().requires_grad_(True)
            module.zero_grad(set_to_none=True)
            y = module(xi)
            y.backward(dy)
            return y.detach(), xi.grad, weight().grad
        return step

    dense = nn.Linear(n_in, n_out)
    with torch.no_grad():
        dense.weight.copy_(dense_w)
        dense.bias.copy_(bias)
    out["dense nn.Linear"] = module_step(dense, lambda: dense.weight)
    for backend in ("masked", "sparse"):
        layer = SparseLinear(n_in, n_out, mask, backend=backend)
        layer.load_state_dict({"weight": dense_w, "bias": bias}, strict=False)
        name = "masked" if backend == "masked" else "sparsetopo"
        out[name] = module_step(layer, (lambda l=layer: l.weight) if backend == "masked"
                                else (lambda l=layer: l.weight_values))

    # torch's own sparse tensors: a COO weight with autograd through torch.sparse.mm
    w_coo = torch.sparse_coo_tensor(torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64)),
                                    torch.from_numpy(values), (n_out, n_in)).coalesce().requires_grad_(True)
    b = bias.clone().requires_grad_(True)

    def torch_sparse() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xi = x.detach().requires_grad_(True)
        w_coo.grad = None
        y = torch.sparse.mm(w_coo, xi.t()).t() + b
        y.backward(dy)
        return y.detach(), xi.grad, w_coo.grad
    out["torch.sparse (COO)"] = torch_sparse

    try:
        import sparselab

        sl = sparselab.SparseLinear(n_in, n_out, sparsity=0.0 if mask.nnz == n_in * n_out else
                                    1 - mask.nnz / (n_in * n_out))
        sl._csr = sparselab.layout.from_dense(dense_w, padding_ratio=sl.padding_ratio)
        sl._values = nn.Parameter(torch.from_numpy(np.asarray(sl._csr.values)))
        with torch.no_grad():
            sl.bias.copy_(bias)
        out["sparselab"] = module_step(sl, lambda: sl._values)
    except ImportError:
        out["sparselab"] = "not installed"
    except Exception as exc:  # a peer's API changed: say so rather than stop the benchmark
        out["sparselab"] = f"failed: {type(exc).__name__}: {exc}"
    try:
        from sparseprop.modules.linear import SparseLinear as SparsepropLinear

        spl = SparsepropLinear(dense_w.clone(), nn.Parameter(bias.clone()))
        out["sparseprop"] = module_step(spl, lambda: spl.W_val)
    except ImportError:
        out["sparseprop"] = "not installed"
    except Exception as exc:
        out["sparseprop"] = f"failed: {type(exc).__name__}: {exc}"
    return out


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """``--shapes`` (``INxOUT:BATCH,...``, batch 256 when left out) as (in, out, batch) triples."""
    out = []
    for part in text.split(","):
        dims, _, batch = part.partition(":")
        n_in, _, n_out = dims.partition("x")
        try:
            out.append((int(n_in), int(n_out), int(batch or 256)))
        except ValueError:
            raise SystemExit(f"--shapes {part!r}: use INxOUT:BATCH, e.g. 3000x3000:256") from None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="784x300:100,3000x3000:256,10000x10000:256,30000x784:256",
                        help="IN x OUT : BATCH, comma-separated")
    parser.add_argument("--sparsities", default="0.9,0.99,0.999")
    parser.add_argument("--masks", default="er,radix")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/peers.json"))
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    try:
        import sparseprop

        sparseprop.set_num_threads(args.threads)
    except (ImportError, AttributeError):
        pass
    rows: list[dict[str, Any]] = []
    for n_in, n_out, batch in parse_shapes(args.shapes):
        for sparsity in (float(s) for s in args.sparsities.split(",")):
            for kind in args.masks.split(","):
                torch.manual_seed(0)
                mask = mask_for(kind, n_in, n_out, sparsity)
                if mask is None:
                    print(f"no RadiX layer of {n_in}x{n_out} at density {1 - sparsity:g}: skipped", flush=True)
                    continue
                values = (torch.randn(mask.nnz) / math.sqrt(max(1.0, mask.nnz / n_out))).numpy()
                bias = torch.randn(n_out) * 0.01
                x, dy = torch.randn(batch, n_in), torch.randn(batch, n_out)
                impls = implementations(mask, values, bias, x, dy)
                ref = impls["masked"]()  # type: ignore[operator]
                row: dict[str, Any] = {"in": n_in, "out": n_out, "batch": batch, "sparsity": sparsity, "mask": kind,
                                       "nnz": int(mask.nnz), "threads": args.threads,
                                       "load_average": os.getloadavg()[0], "ms": {}, "notes": {}}
                steps = {}
                for name, step in impls.items():
                    if isinstance(step, str):
                        row["notes"][name] = step
                        continue
                    y, dx, _ = step()
                    if not (torch.allclose(y, ref[0], rtol=1e-3, atol=1e-3)
                            and torch.allclose(dx, ref[1], rtol=1e-3, atol=1e-3)):
                        row["notes"][name] = "output differs from masked: not timed"
                        continue
                    steps[name] = step
                times: dict[str, list[float]] = {n: [] for n in steps}
                for _ in range(args.repeats):  # interleaved
                    for name, step in steps.items():
                        times[name].append(_time(step, 1, warmup=0))
                row["ms"] = {n: statistics.median(t) for n, t in times.items()}
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(rows))


NAMES = ["dense nn.Linear", "masked", "torch.sparse (COO)", "sparseprop", "sparselab", "sparsetopo"]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| layer, batch, sparsity, mask | " + " | ".join(NAMES) + " | sparsetopo vs best peer | vs dense |",
             "|---|" + "---|" * (len(NAMES) + 2)]
    for r in rows:
        ms = r["ms"]
        cells = [f"{ms[n]:.2f}" if n in ms else r["notes"].get(n, "-") for n in NAMES]
        peers = [ms[n] for n in ("torch.sparse (COO)", "sparseprop", "sparselab") if n in ms]
        ours = ms.get("sparsetopo")
        best = f"x{min(peers) / ours:.2f}" if peers and ours else "-"
        dense = f"x{ms['dense nn.Linear'] / ours:.1f}" if ours and "dense nn.Linear" in ms else "-"
        lines.append(f"| {r['in']}x{r['out']}, {r['batch']}, {r['sparsity']}, {r['mask']} | " + " | ".join(cells)
                     + f" | {best} | {dense} |")
    loads = [r["load_average"] for r in rows]
    lines += ["", f"ms per forward + backward, medians of the repeats, {rows[0]['threads'] if rows else '?'} threads; "
              f"load average {min(loads):.1f}-{max(loads):.1f} during the run." if rows else ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
