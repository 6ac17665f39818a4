"""How the one-shot structures of ``experiments/ablation_source.toml`` differ from the gradual ones.

For each sparsity and pruning seed, the LeNet-300-100 structures of that file: gradual (Fig. 7's), and
one-shot from the same seed's dense network after 20 epochs (Fig. 7's), 3 epochs and 1 epoch. Three
measures per structure, over its two pruned layers (784 -> 300 and 300 -> 100; the output layer is dense
or pruned alike and left out), each a share of the structure's connections:

- ``in gradual``: also in the same seed's gradual structure;
- ``in init``: also among the largest-magnitude weights of the network's own step-0 weights at the same
  per-layer count (what one-shot pruning keeps if the network has not trained at all). The step-0 weights
  are made again with ``sparsetopo train --steps 1`` (the same seed, so the same initial weights);
- ``blank``: of the first layer's connections, the share that start at one of the pixels that are 0 in
  every MNIST training image (their weights never receive a gradient).

A random structure of the same density is expected at ``in gradual`` = ``in init`` = the density, and at
``blank`` = the share of blank pixels.

    python study/structure_overlap.py [--out study/paper]

Prints one line per sparsity and structure: the mean over the pruning seeds, with the range.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from sparsetopo.data.tensors import load_dataset
from sparsetopo.experiments.spec import load_experiment
from sparsetopo.topology.io import load_topology

EXPERIMENT = Path(__file__).resolve().parent.parent / "experiments" / "ablation_source.toml"
STRUCTURES = {"source_gradual_baseline": "gradual", "source_oneshot_baseline": "one-shot, 20 epochs",
              "source_oneshot_3epochs_baseline": "one-shot, 3 epochs", "source_oneshot_1epoch_baseline": "one-shot, 1 epoch"}
LAYERS = ("fc1", "fc2")  # the state-dict prefixes of the two pruned layers, in topology order


def initial_weights(seed: int) -> list[np.ndarray]:
    """The dense LeNet-300-100's step-0 weights for ``seed``, each as (n_in, n_out) like a topology layer."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        subprocess.run([sys.executable, "-m", "sparsetopo", "train", "--model", "lenet300", "--dataset", "mnist",
                        "--seed", str(seed), "--steps", "1", "--quiet", "--out", str(run)],
                       check=True, stdout=subprocess.DEVNULL)
        state = torch.load(run / "weights-step0.pt", weights_only=True, map_location="cpu")
    state = state.get("model", state)
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return [w.detach().numpy().T for w in weights[: len(LAYERS)]]


def top_mask(weights: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` largest-magnitude entries of ``weights`` (ties broken by position)."""
    flat = np.abs(weights).ravel()
    keep = np.argsort(-flat, kind="stable")[:count]
    mask = np.zeros(flat.size, dtype=bool)
    mask[keep] = True
    return mask.reshape(weights.shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="study/paper", help="the study folder holding the pruned structures")
    args = ap.parse_args()
    exp = load_experiment(EXPERIMENT, "paper")
    found: dict[tuple[float, int], dict[str, list[np.ndarray]]] = defaultdict(dict)
    for run in exp.runs:
        if run.stage not in STRUCTURES:
            continue
        path = Path(args.out) / "runs" / run.id / "topology.npz"
        if path.exists():
            topo = load_topology(path)
            found[(run.params["sparsity"], run.params["seed"])][run.stage] = [
                layer.toarray().astype(bool) for layer in topo.layers[: len(LAYERS)]]
    if not found:
        sys.exit(f"no structure of {EXPERIMENT.name} in {args.out}")
    images = load_dataset("mnist").train.images.reshape(-1, 784)
    blank = (images.amax(0) <= 0).numpy()
    print(f"{int(blank.sum())} of 784 pixels are 0 in every training image ({blank.mean():.1%})")
    inits = {seed: initial_weights(seed) for seed in sorted({seed for _, seed in found})}
    rows: dict[tuple[float, str], list[tuple[float, float, float]]] = defaultdict(list)
    for (sparsity, seed), masks in sorted(found.items()):
        gradual = masks.get("source_gradual_baseline")
        for stage, layers in masks.items():
            kept = sum(int(m.sum()) for m in layers)
            in_gradual = (sum(int((m & g).sum()) for m, g in zip(layers, gradual)) / kept) if gradual else float("nan")
            init = [top_mask(w, int(m.sum())) for w, m in zip(inits[seed], layers)]
            in_init = sum(int((m & i).sum()) for m, i in zip(layers, init)) / kept
            on_blank = float(layers[0][blank].sum() / layers[0].sum())
            rows[(sparsity, stage)].append((in_gradual, in_init, on_blank))
    print("sparsity  structure            in gradual           in init              blank (1st layer)   n")
    for (sparsity, stage), values in sorted(rows.items(), key=lambda kv: (kv[0][0], list(STRUCTURES).index(kv[0][1]))):
        cols = []
        for j in range(3):
            v = np.array([row[j] for row in values])
            cols.append(f"{v.mean():6.1%} [{v.min():.1%}, {v.max():.1%}]")
        print(f"{sparsity:8g}  {STRUCTURES[stage]:<20} {cols[0]:<20} {cols[1]:<20} {cols[2]:<19} {len(values)}")
    print(f"a random structure: in gradual = in init = the density; blank = {blank.mean():.1%}")


if __name__ == "__main__":
    main()
