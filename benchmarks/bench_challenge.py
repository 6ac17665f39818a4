"""Sparse DNN Graph Challenge rate: the numba engine against the scipy reference and GraphBLAS, at each size.

For each width (``--neurons``, default 1024) and depth (120 layers: the official 1024-neuron network when
its files are under the data root, else generated; other widths are always generated;
480 and 1920 layers: generated from RadiX-Nets, seed 0) this times, interleaved and repeated (medians):
the numba engine on 1 thread and on all threads over every input, and the scipy reference (single-threaded)
with the numba engine on 1 thread over the reference's inputs (all for 120 layers, the first 6,000 deeper:
the reference is slow). The rate is the challenge's: inputs x edges / inference time. Inputs: the official
``sparse-images-N.tsv`` when present, else the 60,000 regenerated from MNIST at that width. Compared with
SuiteSparse:GraphBLAS's published single-thread 4.0e9-1.56e10 edges/s, and with SuiteSparse:GraphBLAS
itself (python-graphblas, the benchmark extra) on the same inputs and threads, categories checked identical. The process CPU time is recorded
too: on a shared machine, inputs x edges per CPU-second is the per-core rate that other jobs disturb least.

    python benchmarks/bench_challenge.py [--neurons 1024 4096 16384] [--layers 120 480 1920] [--repeats 3]

Prints a table and writes benchmarks/results/challenge.json, with the challenge's own rate table (neurons, layers,
edges, inputs, time, rate = inputs x edges / time) under "rate_table".
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from sparsetopo.challenge import (
    categories,
    generate_network,
    infer,
    inputs_path,
    load_inputs_file,
    load_network,
    reference_infer,
)
from sparsetopo.challenge.engine import resolve_threads
from sparsetopo.challenge.files import cached_mnist_inputs, weight_paths
from sparsetopo.errors import DataError
from sparsetopo.fileio import atomic_write_json

GRAPHBLAS_1T = (4.0e9, 1.56e10)
RESULTS = Path(__file__).resolve().parent / "results" / "challenge.json"


def graphblas_layers(net):
    """The network as SuiteSparse:GraphBLAS matrices (python-graphblas), converted once before timing, and
    its bias as the diagonal matrix the challenge's GraphBLAS recipe adds with plus.plus."""
    import graphblas as gb

    mats = [gb.io.from_scipy_sparse(net.layer(l).astype(np.float32)) for l in range(net.n_layers)]
    n = net.neurons
    bias = gb.Matrix.from_coo(np.arange(n), np.arange(n), np.full(n, net.bias, dtype=np.float32), nrows=n, ncols=n)
    return mats, bias


def graphblas_infer(inputs, mats, bias, ymax: float, threads: int):
    """The challenge's reference recipe in GraphBLAS: Y = Y plus.times W; Y = Y plus.plus diag(bias) (the bias
    on the nonzeros only); keep Y > 0; Y = min(Y, 32)."""
    import graphblas as gb

    gb.ss.config["nthreads"] = threads
    y = gb.io.from_scipy_sparse(inputs.astype(np.float32))
    for w in mats:
        y = y.mxm(w, gb.semiring.plus_times).new()
        y = y.mxm(bias, gb.semiring.plus_plus).new()
        y = y.select(">", 0).new()
        y = y.apply(gb.binary.min, right=ymax).new()
    rows, _, _ = y.to_coo()
    return np.unique(rows) + 1  # 1-based categories, like the engine's


def network_for(neurons: int, layers: int, data_dir: str | None):
    try:
        weight_paths(neurons, layers, data_dir)
        return load_network(neurons, layers, data_dir), "official"
    except DataError:
        return generate_network(neurons, layers, seed=0), "generated, seed 0"


def inputs_for(neurons: int, data_dir: str | None):
    source = inputs_path(neurons, data_dir)
    if source is not None:
        return load_inputs_file(source, neurons), str(source)
    return cached_mnist_inputs(neurons, data_dir), "regenerated from MNIST (FFT resampling)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--neurons", type=int, nargs="+", default=[1024], help="widths to run")
    parser.add_argument("--layers", type=int, nargs="+", default=[120, 480, 1920], help="depths to run")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each method (median)")
    parser.add_argument("--inputs", type=int, default=None, help="use only the first INPUTS inputs")
    parser.add_argument("--reference-inputs", type=int, default=None,
                        help="inputs for the scipy comparison (default: all at 120 layers, 6000 deeper)")
    parser.add_argument("--data-dir", default=None, help="data root (default $SPARSETOPO_DATA)")
    parser.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    args = parser.parse_args(argv)

    most = resolve_threads(None)
    load_start = os.getloadavg()
    rows = []
    sources = {}
    header = (f"{'neurons':>7} {'layers':>6} {'network':<18} {'method':<14} {'inputs':>7} {'time s':>8} {'edges/s':>9} "
              f"{'per core':>9} {'vs scipy':>8} {'vs GraphBLAS 1T':>16} {'CPU s':>7} {'per CPU s':>9}")
    for neurons, n_layers in ((n, layers) for n in args.neurons for layers in args.layers):
        inputs, input_name = inputs_for(neurons, args.data_dir)
        if args.inputs:
            inputs = inputs[: args.inputs]
        n_in = inputs.shape[0]
        if neurons not in sources:
            sources[neurons] = input_name
            infer(generate_network(neurons, 1), inputs[:4], threads=1)          # compile / load the kernels
            print(f"{neurons} neurons: inputs {n_in:,} ({input_name}); threads available: {most}; "
                  f"load average {os.getloadavg()[0]:.1f}")
            print(header)
            print("-" * len(header))
        net, kind = network_for(neurons, n_layers, args.data_dir)
        infer(net.subset(1), inputs[:4], threads=1)                   # kernels for this network's arrays
        edges = net.edges
        n_ref = args.reference_inputs or (n_in if n_layers <= 120 else min(n_in, 6000))
        ref_inputs = inputs[:n_ref]
        methods = {
            "numba 1T": (lambda net=net: infer(net, inputs, threads=1), n_in, 1),
            f"numba {most}T": (lambda net=net: infer(net, inputs, threads=most), n_in, most),
            "scipy 1T": (lambda net=net, x=ref_inputs: reference_infer(x, net), n_ref, 1),
        }
        try:
            gb_mats, gb_bias = graphblas_layers(net)
            for threads in sorted({1, most}):
                methods[f"GraphBLAS {threads}T"] = (
                    lambda m=gb_mats, b=gb_bias, t=threads, ymax=net.ymax: graphblas_infer(inputs, m, b, ymax, t),
                    n_in, threads)
        except ImportError:
            print("python-graphblas is not installed: no GraphBLAS column (pip install -e '.[bench]')")
        if n_ref != n_in:
            methods["numba 1T (ref)"] = (lambda net=net, x=ref_inputs: infer(net, x, threads=1), n_ref, 1)
        times: dict[str, list[float]] = {m: [] for m in methods}
        cpu: dict[str, list[float]] = {m: [] for m in methods}
        outcome: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for name, (call, _, _) in methods.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                result = call()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
                outcome[name] = (result if isinstance(result, np.ndarray) else
                                 result.categories if hasattr(result, "categories") else categories(result))
        numba_ref = outcome["numba 1T (ref)" if n_ref != n_in else "numba 1T"]
        agree = bool(np.array_equal(numba_ref, outcome["scipy 1T"]))
        scipy_rate = n_ref * edges / statistics.median(times["scipy 1T"])
        for name, (_, count, threads) in methods.items():
            seconds = statistics.median(times[name])
            rate = count * edges / seconds
            per_core = rate / threads
            cpu_seconds = statistics.median(cpu[name])
            per_cpu_second = count * edges / cpu_seconds
            row = {
                "neurons": neurons, "layers": n_layers, "network": kind, "method": name, "inputs": count, "threads": threads,
                "edges": edges, "seconds_median": seconds, "seconds_all": times[name], "rate": rate,
                "rate_per_core": per_core, "vs_scipy_rate": rate / scipy_rate,
                "cpu_seconds_median": cpu_seconds, "rate_per_cpu_second": per_cpu_second,
                "per_core_vs_graphblas_1t": [per_core / GRAPHBLAS_1T[0], per_core / GRAPHBLAS_1T[1]],
                "categories": int(outcome[name].size), "numba_equals_scipy": agree,
            }
            rows.append(row)
            gb = f"{per_core / GRAPHBLAS_1T[1]:.1f}x-{per_core / GRAPHBLAS_1T[0]:.1f}x"
            print(f"{neurons:>7} {n_layers:>6} {kind:<18} {name:<14} {count:>7} {seconds:>8.3f} {rate:>9.2e} {per_core:>9.2e} "
                  f"{rate / scipy_rate:>7.1f}x {gb:>16} {cpu_seconds:>7.3f} {per_cpu_second:>9.2e}")
        gb_agree = {name: bool(np.array_equal(outcome[name], outcome["numba 1T"]))
                    for name in outcome if name.startswith("GraphBLAS")}
        for row in rows:
            if (row["neurons"], row["layers"]) == (neurons, n_layers):
                row["graphblas_equals_numba"] = gb_agree
        print(f"{'':>6} categories: {outcome['numba 1T'].size:,} of {n_in:,}; numba and scipy agree on the first "
              f"{n_ref:,}: {agree}; GraphBLAS and numba agree: {gb_agree}")
        sys.stdout.flush()
    load_end = os.getloadavg()
    report = {
        "benchmark": "sparse DNN graph challenge", "neurons": args.neurons, "inputs_source": sources,
        "graphblas_1t_published": GRAPHBLAS_1T, "threads_available": most, "repeats": args.repeats,
        "load_average_start": load_start, "load_average_end": load_end, "machine": platform.processor()
        or platform.machine(), "cpu_count": os.cpu_count(), "rows": rows,
        "command": "python benchmarks/bench_challenge.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        # The challenge's own rate table: one line per network and method, rate = inputs x edges / time.
        "rate_table": [{"neurons": r["neurons"], "layers": r["layers"], "edges": r["edges"], "inputs": r["inputs"],
                        "method": r["method"], "threads": r["threads"], "time_s": r["seconds_median"],
                        "rate_edges_per_s": r["rate"]} for r in rows],
    }
    atomic_write_json(args.out, report)
    print(f"load average {load_start[0]:.1f} -> {load_end[0]:.1f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
