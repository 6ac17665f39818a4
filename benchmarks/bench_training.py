"""Training throughput: sparsetopo's loop against a minimal hand-written PyTorch loop, same model and data.

Both train the same architecture from the same initial weights on the same in-memory MNIST tensors for the
same number of steps (batch 100, SGD lr 0.1) and evaluate once on the test set at the end; the methods are
interleaved and the median of the repeats is reported.

    python benchmarks/bench_training.py [--steps 300] [--repeats 5] [--models lenet300,lenet5]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from sparsetopo.data import load_dataset
from sparsetopo.models import build_model
from sparsetopo.training.hparams import DataHparams, TrainHparams
from sparsetopo.training.loop import train


def bare_loop(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, test_x: torch.Tensor,
              test_y: torch.Tensor, steps: int, batch: int, seed: int) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    per_epoch = len(labels) // batch
    for step in range(steps):
        i = step % per_epoch
        idx = order[i * batch:(i + 1) * batch]
        loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        correct = sum(int((model(test_x[s:s + 1000]).argmax(1) == test_y[s:s + 1000]).sum())
                      for s in range(0, len(test_y), 1000))
    return correct / len(test_y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="lenet300,lenet5")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/training.json"))
    args = parser.parse_args()
    data = load_dataset("mnist")
    batch = 100
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        initial = build_model(name, data.input_shape, data.num_classes)
        times: dict[str, list[float]] = {"sparsetopo": [], "bare": []}
        for _ in range(args.repeats):
            for method in ("sparsetopo", "bare"):
                model = copy.deepcopy(initial)
                start = time.perf_counter()
                if method == "sparsetopo":
                    train(model, data, DataHparams(batch_size=batch), TrainHparams(steps=args.steps, eval_every=args.steps),
                          seed=0, out=None, quiet=True)
                else:
                    bare_loop(model, data.train.images, data.train.labels, data.test.images, data.test.labels,
                              args.steps, batch, 0)
                times[method].append(time.perf_counter() - start)
        ours, bare = statistics.median(times["sparsetopo"]), statistics.median(times["bare"])
        rows.append({"model": name, "steps": args.steps, "batch": batch,
                     "samples_per_s_sparsetopo": args.steps * batch / ours, "samples_per_s_bare": args.steps * batch / bare,
                     "overhead": ours / bare - 1.0, "threads": torch.get_num_threads(),
                     "load_average": os.getloadavg()[0]})
    print(f"{'model':<10} {'sparsetopo samples/s':>21} {'bare loop samples/s':>20} {'overhead':>9}")
    for r in rows:
        print(f"{r['model']:<10} {r['samples_per_s_sparsetopo']:>21,.0f} {r['samples_per_s_bare']:>20,.0f} "
              f"{100 * r['overhead']:>8.1f}%")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
