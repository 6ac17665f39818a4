"""Speed of building topologies (issue 3's two RadiX-Net cases) against a reference construction.

Baseline: the RadiX-Net definition built the straightforward scipy way, per layer: a COO matrix of the n
shifted diagonals ``y = (x - k p) mod N'``, then ``scipy.sparse.kron(ones(B_i, B_i+1), A)`` to CSR bool.
Both constructions run interleaved in the same process and must give identical matrices; times are
medians over repeats. Also timed, without a baseline ratio where none is meaningful: random layers of the
same size, and path statistics.

    python3 benchmarks/bench_topology.py            # full run, writes benchmarks/results/bench_topology.json
    python3 benchmarks/bench_topology.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from sparsetopo.topology import radix_net, random_topology
from sparsetopo.topology.radix import normalize_systems

CASES = {
    "radix (2,)*16, kron 1 (65,536 x16 layers, 2/row)": ((2,) * 16, None),
    "radix (2,)*6, kron 16 (1,024 x6 layers, 32/row)": ((2,) * 6, (16,) * 7),
}


def reference_radix(systems, kron=None) -> list[sp.csr_array]:
    systems_n = normalize_systems(systems)
    n_prime = math.prod(systems_n[0])
    radices = []
    for system in systems_n:
        place = 1
        for n in system:
            radices.append((n, place))
            place *= n
    kron = list(kron) if kron is not None else [1] * (len(radices) + 1)
    layers = []
    x = np.arange(n_prime)
    for i, (n, place) in enumerate(radices):
        rows = np.concatenate([x] * n)
        cols = np.concatenate([(x - k * place) % n_prime for k in range(n)])
        a = sp.coo_array((np.ones(rows.shape[0], dtype=np.int8), (rows, cols)), shape=(n_prime, n_prime))
        layer = sp.kron(np.ones((kron[i], kron[i + 1]), dtype=np.int8), a, format="csr").astype(bool)
        layers.append(sp.csr_array(layer))
    return layers


def _time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per method (median reported; default 7)")
    parser.add_argument("--out", default="benchmarks/results/bench_topology.json", help="JSON results file")
    args = parser.parse_args()

    rows = []
    for label, (systems, kron) in CASES.items():
        ours_t, ref_t = [], []
        for _ in range(args.repeats):  # interleave the two constructions
            t, topo = _time(lambda: radix_net(systems, kron), 1)
            ours_t.append(t)
            t, ref = _time(lambda: reference_radix(systems, kron), 1)
            ref_t.append(t)
        assert all((a != b).nnz == 0 for a, b in zip(topo.layers, ref)), "constructions disagree"
        ours, base = statistics.median(ours_t), statistics.median(ref_t)
        n_layers = len(topo.layers)
        rows.append({"case": label, "layers": n_layers, "nnz": topo.total_nnz, "ours_s": ours, "baseline_s": base,
                     "ours_per_layer_ms": 1e3 * ours / n_layers, "speedup": base / ours})
        n = topo.layers[0].shape[0]
        dens = topo.density[0]
        for mode in ("exact", "fanin"):
            t, _ = _time(lambda: random_topology([n] * (n_layers + 1), dens, 0, mode=mode), max(1, args.repeats // 2))
            rows.append({"case": f"  random {mode}, same sizes and density", "layers": n_layers, "nnz": topo.total_nnz,
                         "ours_s": t, "baseline_s": None, "ours_per_layer_ms": 1e3 * t / n_layers, "speedup": None})
        if n <= 4096:
            t, pc = _time(topo.path_counts, max(1, args.repeats // 2))
            rows.append({"case": f"  path_counts() -> {pc}", "layers": n_layers, "nnz": topo.total_nnz,
                         "ours_s": t, "baseline_s": None, "ours_per_layer_ms": 1e3 * t / n_layers, "speedup": None})

    print(f"{'case':58s} {'layers':>6s} {'nnz':>10s} {'ms/layer':>9s} {'total s':>8s} {'ref s':>8s} {'speedup':>8s}")
    for r in rows:
        ref = f"{r['baseline_s']:.4f}" if r["baseline_s"] is not None else "-"
        spd = f"{r['speedup']:.1f}x" if r["speedup"] is not None else "-"
        print(f"{r['case']:58s} {r['layers']:6d} {r['nnz']:10,d} {r['ours_per_layer_ms']:9.2f} {r['ours_s']:8.4f} {ref:>8s} {spd:>8s}")
    result = {
        "benchmark": "topology",
        "repeats": args.repeats,
        "baseline": "per-layer COO of shifted diagonals + scipy.sparse.kron, converted to bool CSR",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg": list(os.getloadavg())},
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} (load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
