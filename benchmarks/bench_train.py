"""Train one model through ``sparsetopo train`` once per backend, each in its own process: time and memory.

For each backend it runs the real command line (data loading, the training loop, checkpoints, one test
evaluation at the end) in a fresh process and reports the process's wall time, the loop's own
``wall_seconds`` from ``summary.json``, the peak resident memory of that process (``os.wait4``), and the
final test accuracy. Runs are interleaved over ``--repeats``; medians are reported.

    # LeNet-5 x10 on CIFAR-10 (conv2 and fc1 10x wider at density 1/10), one epoch (500 steps)
    python benchmarks/bench_train.py --model lenet5 --dataset cifar10 --topology random \\
        --scale connections:10 --steps 500
    # LeNet-5 x100: a few steps per backend, to compare step time and memory
    python benchmarks/bench_train.py --model lenet5 --dataset cifar10 --topology random \\
        --scale connections:100 --steps 20 --out benchmarks/results/bench_train_lenet5_x100.json

Any extra arguments after ``--`` are passed to ``sparsetopo train`` unchanged.
Writes ``benchmarks/results/bench_train.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sparsetopo.fileio import atomic_write_json

RESULTS = Path(__file__).parent / "results"


def run_one(backend: str, args: argparse.Namespace, extra: list[str], workdir: Path) -> dict:
    out_dir = workdir / f"{backend}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "sparsetopo", "train", "--model", args.model, "--dataset", args.dataset,
           "--topology", args.topology, "--backend", backend, "--steps", str(args.steps),
           "--eval-every", str(args.steps), "--seed", str(args.seed), "--quiet", "--out", str(out_dir)]
    if args.scale:
        cmd += ["--scale", args.scale]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += extra
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {code}:\n{output}")
    summary = json.loads((out_dir / "summary.json").read_text())
    return {"backend": backend, "process_s": wall, "loop_s": summary["wall_seconds"],
            "steps": summary["steps"], "peak_rss_mib": usage.ru_maxrss / 1024,
            "test_acc": summary["final_test_accuracy"], "weights_total": summary["weights_total"],
            "weights_nonzero": summary["weights_nonzero"],
            "layers": [{k: layer[k] for k in ("name", "shape", "nnz", "density")} for layer in summary["layers"]]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lenet5", help="model (default lenet5)")
    p.add_argument("--dataset", default="cifar10", help="dataset (default cifar10)")
    p.add_argument("--topology", default="random", help="topology spec (default random)")
    p.add_argument("--scale", default="connections:10", help="width scaling (default connections:10)")
    p.add_argument("--steps", type=int, default=500, help="training steps (default 500: one CIFAR-10 epoch)")
    p.add_argument("--backends", default="masked,sparse,auto", help="comma-separated (default masked,sparse,auto)")
    p.add_argument("--repeats", type=int, default=1, help="runs per backend, interleaved (median; default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=str(RESULTS / "bench_train.json"), help="JSON output path")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    backends = args.backends.split(",")
    bad = [b for b in backends if b not in ("masked", "sparse", "auto")]
    if bad:
        p.error(f"--backends: unknown {bad}; allowed: masked, sparse, auto")

    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="sparsetopo-bench-train-") as tmp:
        for rep in range(args.repeats):
            for b in backends:
                r = run_one(b, args, extra, Path(tmp))
                r["repeat"] = rep
                runs.append(r)
                print(f" {b:>6} run {rep + 1}: loop {r['loop_s']:.1f} s ({r['steps']} steps), process "
                      f"{r['process_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB, test acc {r['test_acc']:.4f}",
                      flush=True)

    def med(b: str, k: str) -> float:
        return statistics.median(r[k] for r in runs if r["backend"] == b)
    summary = {b: {k: med(b, k) for k in ("loop_s", "process_s", "peak_rss_mib", "test_acc")} for b in backends}
    print(f"\n{args.model} on {args.dataset}, --topology {args.topology} --scale {args.scale}, {args.steps} steps, "
          f"{args.repeats} run(s) per backend, medians:")
    print(f"{'backend':>8} {'loop s':>8} {'process s':>10} {'peak RSS MiB':>13} {'test acc':>9}")
    for b in backends:
        s = summary[b]
        print(f"{b:>8} {s['loop_s']:>8.1f} {s['process_s']:>10.1f} {s['peak_rss_mib']:>13.0f} {s['test_acc']:>9.4f}")
    if "masked" in summary:
        for b in backends:
            if b != "masked":
                summary[f"speedup_loop_{b}"] = summary["masked"]["loop_s"] / summary[b]["loop_s"]
                summary[f"rss_ratio_{b}"] = summary[b]["peak_rss_mib"] / summary["masked"]["peak_rss_mib"]
                print(f"{b} vs masked: loop x{summary[f'speedup_loop_{b}']:.2f} faster, peak RSS "
                      f"{summary[f'rss_ratio_{b}']:.2f} of masked")
    result = {"benchmark": "train", "command": " ".join(["bench_train.py", *argv, *(["--", *extra] if extra else [])]),
              "model": args.model, "dataset": args.dataset, "topology": args.topology, "scale": args.scale,
              "steps": args.steps, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
              "cpu_count": os.cpu_count(), "runs": runs, "summary": summary}
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
