"""Training throughput, as same-run ratios.

Rows (``--rows``, comma-separated):

- ``loop``: sparsetopo's loop and model against a minimal hand-written PyTorch loop over the same
  architecture written in plain PyTorch (``nn.Sequential``, what a user would write), with the same initial
  weights and in-memory MNIST tensors (batch 100, SGD lr 0.1), one test pass at the end; interleaved,
  median of the repeats. ``speedup`` is bare / ours.
- ``concurrent``: one ``sparsetopo train`` process alone, then two started together, each timed from its
  own start to its end (the run's own ``wall_seconds``); the ratio is each concurrent run over the run alone,
  the worst of ``--tries`` tries. With ``OMP_WAIT_POLICY=PASSIVE`` (what sparsetopo sets unless the
  environment says otherwise) and ``ACTIVE``, and with ``--spincounts N,...`` also PASSIVE with
  ``GOMP_SPINCOUNT=N`` (GNU OpenMP spins N rounds before it sleeps); ``--concurrent-models``.
- ``wide``: milliseconds per training step of LeNet-5 x100 and x10 at density 1/K (``--scale
  connections:K``) on CIFAR-10 and MNIST, steady state after one warm-up step, against the earlier
  two-step forward (conv2's full-resolution output stored, then pooled), and against the fused forward
  with its earlier kernel tiles (up to 1,024 pooled columns a pass), interleaved in one process.
- ``resnet``: milliseconds per step of ResNet-20 on CIFAR-10 (batch 128, SGD with momentum): dense, and at
  fixed connections K = 2 and 10 with random and fitted RadiX layers on the masked and sparse backends.
- ``dst``: what a structure update of dynamic sparse training (SET, RigL) costs against a training step,
  LeNet-300-100 x10 at density 1/10, sparse backend.
- ``seeds``: two seeds of LeNet-300-100 (plain PyTorch, MNIST, batch 100, SGD) trained as two 1-thread
  processes at once (what a sweep does), against one process training both as one stacked model (batched
  matrix products, ``torch.baddbmm``) on all threads: does batching seeds pay?

    python benchmarks/bench_training.py [--rows loop,concurrent,wide,dst,resnet,seeds] [--steps 300] [--repeats 5]
"""

from __future__ import annotations

import sparsetopo  # noqa: F401  first: it sets OMP_WAIT_POLICY=PASSIVE (fair sharing) before torch loads

# isort: split

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsetopo.data import load_dataset
from sparsetopo.models import build_model
from sparsetopo.training.hparams import DataHparams, ModelHparams, TrainHparams
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


def plain_model(name: str, like: nn.Module) -> nn.Module:
    """What a user writes in plain PyTorch for the same architecture (NCHW, ReLU then pooling as in Caffe),
    with ``like``'s weights."""
    if name == "lenet300":
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                              nn.Linear(100, 10))
        pairs = zip((model[1], model[3], model[5]), (like.fc1, like.fc2, like.fc3))
    else:
        model = nn.Sequential(nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
        pairs = zip((model[0], model[3], model[7], model[9]), (like.conv1, like.conv2, like.fc1, like.fc2))
    with torch.no_grad():
        for mine, theirs in pairs:
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
    return model


def loop_rows(models: list[str], steps: int, repeats: int) -> list[dict[str, Any]]:
    data = load_dataset("mnist")
    batch = 100
    rows = []
    for name in models:
        torch.manual_seed(0)
        initial = build_model(name, data.input_shape, data.num_classes)
        plain = plain_model(name, initial)
        times: dict[str, list[float]] = {"sparsetopo": [], "bare": []}
        for _ in range(repeats):
            for method in ("sparsetopo", "bare"):
                model = copy.deepcopy(initial if method == "sparsetopo" else plain)
                start = time.perf_counter()
                if method == "sparsetopo":
                    train(model, data, DataHparams(batch_size=batch), TrainHparams(steps=steps, eval_every=steps),
                          seed=0, out=None, quiet=True)
                else:
                    bare_loop(model, data.train.images, data.train.labels, data.test.images, data.test.labels,
                              steps, batch, 0)
                times[method].append(time.perf_counter() - start)
        ours, bare = statistics.median(times["sparsetopo"]), statistics.median(times["bare"])
        rows.append({"row": "loop", "model": name, "steps": steps, "batch": batch, "threads": torch.get_num_threads(),
                     "ms_per_step_sparsetopo": 1e3 * ours / steps, "ms_per_step_bare": 1e3 * bare / steps,
                     "speedup": bare / ours, "load_average": os.getloadavg()[0]})
    return rows


def _train_process(out: Path, steps: int, policy: str | None, spincount: int | None = None,
                   model: str = "lenet300") -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    if spincount is not None:  # GNU OpenMP (torch's Linux wheels): spin this many rounds before sleeping
        env["GOMP_SPINCOUNT"] = str(spincount)
    cmd = [sys.executable, "-m", "sparsetopo", "train", "--model", model, "--steps", str(steps),
           "--eval-every", str(steps), "--quiet", "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _loop_seconds(out: Path) -> float:
    return float(json.loads((out / "summary.json").read_text())["wall_seconds"])


def concurrent_rows(steps: int, tries: int, spincounts: list[int] | None = None,
                    models: tuple[str, ...] = ("lenet300",)) -> list[dict[str, Any]]:
    """Each run's training-loop time (its summary's wall_seconds), two at once against one alone, under
    ``OMP_WAIT_POLICY`` PASSIVE and ACTIVE, and PASSIVE with each of ``spincounts`` (``GOMP_SPINCOUNT``)."""
    rows = []
    settings: list[tuple[str, int | None]] = [("PASSIVE", None), ("ACTIVE", None)]
    settings += [("PASSIVE", n) for n in spincounts or []]
    for model in models:
        for policy, spin in settings:
            worst, alone_times, pair_times = 0.0, [], []
            for _ in range(tries):
                with tempfile.TemporaryDirectory() as tmp:
                    base = Path(tmp)
                    p = _train_process(base / "alone", steps, policy, spin, model)
                    p.communicate()
                    alone = _loop_seconds(base / "alone")
                    procs = [_train_process(base / f"pair{i}", steps, policy, spin, model) for i in range(2)]
                    for q in procs:
                        q.communicate()
                    pair = [_loop_seconds(base / f"pair{i}") for i in range(2)]
                alone_times.append(alone)
                pair_times += pair
                worst = max(worst, *(t / alone for t in pair))
            rows.append({"row": "concurrent", "model": model, "steps": steps, "omp_wait_policy": policy,
                         "gomp_spincount": spin, "tries": tries, "alone_s": statistics.median(alone_times),
                         "pair_s": statistics.median(pair_times), "worst_ratio": worst,
                         "load_average": os.getloadavg()[0]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _timed_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds of one training step: forward, cross-entropy, backward, optimiser step."""
    start = time.perf_counter()
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def _step_ms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, momentum: float = 0.9) -> float:
    """Median milliseconds of one SGD step (lr 0.1) after a warm-up step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    times = [_timed_step(model, opt, x, y) for _ in range(steps + 1)]
    return 1e3 * statistics.median(times[1:])


def _two_step_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LeNet-5's forward as it was before the fused convolution + pooling: conv2's full-resolution output
    is stored, then max-pooled and ReLU'd by torch (the same values and gradients, bit for bit)."""
    x = x.contiguous(memory_format=torch.channels_last)
    x = torch.relu(torch.max_pool2d(model.conv1(x), 2))
    x = torch.relu(torch.max_pool2d(model.conv2(x), 2))
    x = torch.flatten(x, 1)
    x = torch.relu(model.fc1(x))
    return model.fc2(x)


WIDE = (("cifar10", 100), ("mnist", 100), ("cifar10", 10), ("mnist", 10))


def wide_rows(steps: int) -> list[dict[str, Any]]:
    """LeNet-5 widened at fixed connections (x100 and x10 at density 1/K, sparse conv2 and fc1), one step
    at batch 100: the model's forward (conv2 pooled and ReLU'd as it is computed) against the two-step
    forward of the earlier code, the same model, weights and batch, interleaved step by step."""
    import types

    from sparsetopo.nn import kernels
    from sparsetopo.runs import describe
    from sparsetopo.training.run import build_network, network_for

    rows = []
    for dataset, k in WIDE:
        data = load_dataset(dataset)
        desc = describe("train", {"model": "lenet5", "dataset": dataset, "topology": "random",
                                  "scale": f"connections:{k}"})
        mh = desc.group(ModelHparams)
        torch.manual_seed(0)
        model = build_network(mh, network_for(mh, dataset))
        x, y = data.train.images[:100].contiguous(), data.train.labels[:100]
        fused = model.forward
        two_step = types.MethodType(_two_step_forward, model)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every step sees the same weights
        times: dict[str, list[float]] = {"fused": [], "two_step": [], "fused_wide_tiles": []}
        budget = kernels.POOL_TILE_BYTES
        variants = [("two_step", two_step), ("fused", fused), ("fused_wide_tiles", fused)]
        for i in range(steps + 1):
            # each variant in turn first: the step after the two-step one's large frees starts colder
            for name, forward in variants[i % 3:] + variants[:i % 3]:
                model.forward = forward
                # the fused kernel with the tiles it had before pool_tile (up to 1,024 pooled columns)
                kernels.POOL_TILE_BYTES = 1 << 40 if name == "fused_wide_tiles" else budget
                seconds = _timed_step(model, opt, x, y)
                if i:
                    times[name].append(seconds)
        kernels.POOL_TILE_BYTES = budget
        model.forward = fused
        ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        rows.append({"row": "wide", "model": f"lenet5 x{k}", "dataset": dataset, "steps": steps,
                     "ms_per_step": ms["fused"], "ms_per_step_two_step": ms["two_step"],
                     "ms_per_step_wide_tiles": ms["fused_wide_tiles"],
                     "speedup": ms["two_step"] / ms["fused"], "speedup_over_wide_tiles": ms["fused_wide_tiles"] / ms["fused"],
                     "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]})
    return rows


def _connections(model: nn.Module) -> int:
    """Weights of the Linear/Conv2d layers: the nonzeros of sparse ones, every weight of plain ones."""
    return sum(int(m.nnz) if hasattr(m, "nnz") else m.weight.numel() for m in model.modules()
               if hasattr(m, "nnz") or isinstance(m, (nn.Linear, nn.Conv2d)))


def resnet_rows(steps: int) -> list[dict[str, Any]]:
    """ResNet-20 on CIFAR-10 (batch 128): the dense network, and fixed connections K = 2 and 10 (random and
    fitted RadiX layers, every stage x sqrt(K) wider at density 1/K) on the masked and the sparse backend;
    ratios against the dense step of the same run."""
    from sparsetopo.runs import describe
    from sparsetopo.training.run import build_network, network_for

    data = load_dataset("cifar10")
    x, y = data.train.images[:128].contiguous(), data.train.labels[:128]
    configs = [("dense", None, "auto")] + [(topo, f"connections:{k}", backend) for k in (2, 10)
                                           for topo in ("random", "radix") for backend in ("masked", "sparse")]
    rows, dense_ms = [], None
    for topology, scale, backend in configs:
        params: dict[str, Any] = {"model": "resnet20", "dataset": "cifar10", "topology": topology, "backend": backend}
        if scale:
            params["scale"] = scale
        mh = describe("train", params).group(ModelHparams)
        torch.manual_seed(0)
        model = build_network(mh, network_for(mh, "cifar10"))
        ms = _step_ms(model, x, y, steps)
        dense_ms = ms if dense_ms is None else dense_ms
        rows.append({"row": "resnet", "model": "resnet20", "dataset": "cifar10", "topology": topology,
                     "scale": scale or "-", "backend": backend, "batch": 128, "ms_per_step": ms,
                     "over_dense": ms / dense_ms, "connections": _connections(model),
                     "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]})
    return rows


def dst_rows(repeats: int) -> list[dict[str, Any]]:
    """What a structure update costs against a training step: LeNet-300-100 x10 (784-3000-100-10) at density
    1/10 on the sparse backend, the median step, and the median update (SET, RigL) on top of its step."""
    from sparsetopo.models import instantiate
    from sparsetopo.models.sparse import resolve_network
    from sparsetopo.training.dst import DynamicSparsity

    data = load_dataset("mnist")
    net = resolve_network("lenet300", data.input_shape, data.num_classes, topology="random", scale="connections:10")
    rows = []
    for method in ("set", "rigl"):
        torch.manual_seed(0)
        model = instantiate(net.arch, net.masks, backend="sparse")
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        dst = DynamicSparsity(model, method, interval=2, fraction=0.3, end_step=10**9, seed=0)
        steps, updates = [], []
        for i in range(2 * repeats + 2):
            x, y = data.train.images[i * 100:(i + 1) * 100], data.train.labels[i * 100:(i + 1) * 100]
            t = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t_step = time.perf_counter() - t
            dst.on_step_end(i + 1, model, opt)
            t_update = time.perf_counter() - t - t_step
            if i >= 2:
                (updates if (i + 1) % 2 == 0 else steps).append(t_update if (i + 1) % 2 == 0 else t_step)
        rows.append({"row": "dst", "model": "lenet300 x10", "density": 0.1, "method": method,
                     "ms_per_step": 1e3 * statistics.median(steps), "ms_per_update": 1e3 * statistics.median(updates),
                     "update_over_step": statistics.median(updates) / statistics.median(steps),
                     "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]})
    return rows


class StackedMLP(nn.Module):
    """k copies of a plain ``nn.Sequential`` MLP (Flatten, Linear, ReLU, ..., Linear) as one model of batched
    matrix products: input (k, batch, features), output (k, batch, classes)."""

    def __init__(self, models: list[nn.Sequential]) -> None:
        super().__init__()
        layers = [[m for m in model if isinstance(m, nn.Linear)] for model in models]
        self.weights = nn.ParameterList(nn.Parameter(torch.stack([ls[j].weight.detach().t() for ls in layers]))
                                        for j in range(len(layers[0])))
        self.biases = nn.ParameterList(nn.Parameter(torch.stack([ls[j].bias.detach()[None] for ls in layers]))
                                       for j in range(len(layers[0])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for j, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if j < len(self.weights) - 1:
                x = torch.relu(x)
        return x


def _plain_lenet300(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10))


def seed_child(seed: int, steps: int) -> None:
    """One seed's bare loop at 1 thread; prints its loop seconds."""
    torch.set_num_threads(1)
    data = load_dataset("mnist")
    model = _plain_lenet300(seed)
    start = time.perf_counter()
    bare_loop(model, data.train.images, data.train.labels, data.test.images[:1000], data.test.labels[:1000], steps,
              100, seed)
    print(time.perf_counter() - start)


def seeds_rows(steps: int, repeats: int) -> list[dict[str, Any]]:
    data = load_dataset("mnist")
    images, labels, batch = data.train.images.reshape(len(data.train.labels), -1), data.train.labels, 100
    rows = []
    for _ in range(repeats):
        procs = [subprocess.Popen([sys.executable, __file__, "--seed-child", str(s), "--steps", str(steps)],
                                  stdout=subprocess.PIPE, text=True) for s in range(2)]
        apart = max(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)
        model = StackedMLP([_plain_lenet300(s) for s in range(2)])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        orders = [torch.randperm(len(labels), generator=torch.Generator().manual_seed(s)) for s in range(2)]
        per_epoch = len(labels) // batch
        start = time.perf_counter()
        for step in range(steps):
            i = step % per_epoch
            idx = [o[i * batch:(i + 1) * batch] for o in orders]
            out = model(torch.stack([images[j] for j in idx]))
            target = torch.stack([labels[j] for j in idx])
            # the sum of the two mean losses: each copy's gradient is its own loss's
            loss = nn.functional.cross_entropy(out.reshape(-1, 10), target.reshape(-1), reduction="sum") / batch
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        together = time.perf_counter() - start
        rows.append({"row": "seeds", "model": "lenet300", "seeds": 2, "steps": steps,
                     "ms_per_step_two_processes": 1e3 * apart / steps,
                     "ms_per_step_stacked": 1e3 * together / steps, "stacked_speedup": apart / together,
                     "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="loop,concurrent,wide")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tries", type=int, default=3, help="concurrent: tries (the worst is reported)")
    parser.add_argument("--models", default="lenet300,lenet5")
    parser.add_argument("--spincounts", default="", help="concurrent: also PASSIVE with these GOMP_SPINCOUNT values")
    parser.add_argument("--concurrent-models", default="lenet300", help="concurrent: the models of the runs")
    parser.add_argument("--wide-steps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/training.json"))
    parser.add_argument("--seed-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed_child is not None:
        seed_child(args.seed_child, args.steps)
        return
    rows: list[dict[str, Any]] = []
    wanted = args.rows.split(",")
    if "loop" in wanted:
        rows += loop_rows(args.models.split(","), args.steps, args.repeats)
    if "concurrent" in wanted:
        spins = [int(n) for n in args.spincounts.split(",")] if args.spincounts else None
        rows += concurrent_rows(max(args.steps, 600), args.tries, spins, tuple(args.concurrent_models.split(",")))
    if "wide" in wanted:
        rows += wide_rows(args.wide_steps)
    if "dst" in wanted:
        rows += dst_rows(args.repeats)
    if "resnet" in wanted:
        rows += resnet_rows(args.wide_steps)
    if "seeds" in wanted:
        rows += seeds_rows(args.steps, args.repeats)
    for r in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
