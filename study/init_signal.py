"""How much of the input reaches LeNet-5's output at initialisation, on Fig. 8's gradual structures.

For each structure of ``experiments/ablation_fig8_init.toml`` (75-99%) and each retraining seed, the
initial weights of the retrained network are made again with ``sparsetopo train --steps 1`` (the same
options as the published run, so the same step-0 weights, ``weights-step0.pt``), once with ``--init
sparse`` and once with ``--init dense``. The measure is the logits' standard deviation across the first
1,000 test digits (mean over the 10 classes): how much the output depends on the input before training.
A network whose output barely depends on its input gets almost no gradient into its lower layers.

    python study/init_signal.py [--out study/paper] [--seeds 100,101,102,103,104]

Prints one line per structure and initialisation: the median over the seeds and the range.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from sparsetopo.data.tensors import load_dataset
from sparsetopo.experiments.spec import load_experiment
from sparsetopo.models.registry import instantiate
from sparsetopo.models.sparse import resolve_network

EXPERIMENT = Path(__file__).resolve().parent.parent / "experiments" / "ablation_fig8_init.toml"


def logit_spread(model: torch.nn.Module, weights: Path, x: torch.Tensor) -> float:
    """The logits' std across the inputs ``x`` (mean over the classes), ``model`` holding ``weights``."""
    state = torch.load(weights, weights_only=True, map_location="cpu")
    model.load_state_dict(state.get("model", state))
    with torch.no_grad():
        return float(model(x).std(0).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="study/paper", help="the study folder holding the pruned structures")
    ap.add_argument("--seeds", default="100,101,102,103,104")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    exp = load_experiment(EXPERIMENT, "paper")
    structures = [(r.params["sparsity"], r.id) for r in exp.runs if r.stage == "source_gradual_baseline"]
    x = load_dataset("mnist").test.images[:1000]
    print("sparsity  init    logit std across inputs at step 0: median [range] over seeds")
    for sparsity, rid in sorted(structures):
        topo_file = Path(args.out) / "runs" / rid / "topology.npz"
        if not topo_file.exists():
            print(f"{sparsity:8g}  (structure {rid} not in {args.out})")
            continue
        topology = f"file:{topo_file}"
        net = resolve_network("lenet5", (1, 28, 28), 10, topology=topology)
        model = instantiate(net.arch, net.masks, backend="masked")  # its weights are replaced per run
        for init in ("sparse", "dense"):
            spreads = []
            for seed in seeds:
                with tempfile.TemporaryDirectory() as tmp:
                    run = Path(tmp) / "run"
                    subprocess.run([sys.executable, "-m", "sparsetopo", "train", "--model", "lenet5", "--dataset",
                                    "mnist", "--topology", topology, "--init", init, "--seed", str(seed),
                                    "--steps", "1", "--quiet", "--out", str(run)],
                                   check=True, stdout=subprocess.DEVNULL)
                    spreads.append(logit_spread(model, run / "weights-step0.pt", x))
            print(f"{sparsity:8g}  {init:6}  {statistics.median(spreads):.2e} "
                  f"[{min(spreads):.2e}, {max(spreads):.2e}] (n={len(spreads)})")


if __name__ == "__main__":
    main()
