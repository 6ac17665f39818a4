"""``prune`` runs: gradual pruning while training, and one-shot pruning of a finished train run.

Both write the usual run files (``hparams.json``, ``metrics.jsonl``, ``checkpoint.pt``, ``summary.json``)
plus ``topology.npz``: the pruned structure of every weight layer, for ``train --topology file:...``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from sparsetopo.errors import ConfigError, UserError
from sparsetopo.fileio import atomic_path, atomic_write_text
from sparsetopo.models import instantiate
from sparsetopo.models.lenet import ModelArch
from sparsetopo.models.sparse import Network
from sparsetopo.pruning.gradual import GradualPruning
from sparsetopo.pruning.hparams import PRUNE_GROUPS, PruneHparams
from sparsetopo.pruning.magnitude import layer_sparsity, magnitude_masks
from sparsetopo.topology import Topology, save_topology
from sparsetopo.training import rundir
from sparsetopo.training.hparams import TRAIN_GROUPS, build, canonical, collect, load_toml
from sparsetopo.training.loop import CHECKPOINT, METRICS, LoopResult, evaluate
from sparsetopo.training.rewind import dense_state
from sparsetopo.training.run import (RunOptions, build_network, cached_dataset, check_init, execute,
                                     network_for, summarise)

__all__ = ["PRUNE_GROUPS", "TOPOLOGY", "run_prune", "run_gradual", "run_oneshot", "weight_masks"]

TOPOLOGY = "topology.npz"
# Options of the dense run that one-shot pruning must agree with when they are given.
SOURCE_KEYS = ("dataset", "model", "widths", "topology", "scale")


def run_prune(params: Mapping[str, Any], options: RunOptions, config: str | Path | None = None) -> dict[str, Any]:
    """Run ``prune`` with ``params`` (option names as in the CLI, underscores); returns the summary."""
    groups = collect(PRUNE_GROUPS, params, config, extra=())
    ph: PruneHparams = groups[-1]
    if ph.method == "oneshot":
        given = set(params) | (set(load_toml(config)) if config else set())
        return run_oneshot(groups, options, given)
    return run_gradual(groups, options)


def prunable(arch: ModelArch, exclude: tuple[str, ...]) -> list[str]:
    """The layers to prune: every weight layer except ``exclude`` (refusing unknown names)."""
    unknown = [n for n in exclude if n not in arch.names]
    if unknown:
        raise ConfigError(f"--exclude {','.join(exclude)}: {', '.join(unknown)} not a layer of {arch.name}; "
                          f"its layers are {', '.join(arch.names)}")
    names = [n for n in arch.names if n not in exclude]
    if not names:
        raise ConfigError(f"--exclude {','.join(exclude)} leaves no layer of {arch.name} to prune")
    return names


def weight_masks(model: nn.Module, arch: ModelArch) -> dict[str, np.ndarray]:
    """Every weight layer's bool mask in PyTorch layout (all true for a plain dense layer)."""
    out = {}
    for layer in arch.layers:
        module = getattr(model, layer.name)
        if hasattr(module, "mask_dense"):
            out[layer.name] = module.mask_dense().cpu().numpy().astype(bool)
        else:
            out[layer.name] = np.ones(layer.weight_shape, dtype=bool)
    return out


def write_topology(model: nn.Module, arch: ModelArch, path: Path, meta: dict[str, Any]) -> Topology:
    masks = weight_masks(model, arch)
    topo = Topology.from_weight_masks([masks[n] for n in arch.names], names=list(arch.names), meta=meta)
    save_topology(topo, path)
    return topo


def _pruning_summary(ph: PruneHparams, names: list[str], model: nn.Module) -> dict[str, Any]:
    masks = {n: getattr(model, n).mask_dense() for n in names}
    removed = sum(int((~m).sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return {"method": ph.method, "target_sparsity": ph.sparsity, "global_prune": ph.global_prune,
            "pruned_layers": names, "layer_sparsity": layer_sparsity(masks),
            "sparsity_reached": removed / total}


def _meta(ph: PruneHparams, arch: ModelArch, names: list[str], run_id: str, accuracy: float | None) -> dict[str, Any]:
    return {"kind": "pruned", "method": ph.method, "sparsity": ph.sparsity, "global": ph.global_prune,
            "model": arch.name, "pruned_layers": names, "run_id": run_id, "pruned_test_accuracy": accuracy}


# ------------------------------------------------------------------------------------------------ gradual

def run_gradual(groups: list[Any], options: RunOptions) -> dict[str, Any]:
    """Train from dense and prune on the cubic schedule; the masks are fixed after ``end``."""
    dh, mh, th, ph = groups
    check_init(mh.init)
    if mh.topology != "dense":
        raise ConfigError(f"--topology {mh.topology}: gradual pruning starts from a dense network; use --topology "
                          "dense (the default)")
    if mh.backend == "sparse":
        raise ConfigError("--backend sparse: gradual pruning changes the masks while training, which needs "
                          "--backend masked (or auto)")
    data = cached_dataset(dh.dataset, options.data_dir, dh.validation, options.mirror, not options.quiet)
    base = network_for(mh, data)
    names = prunable(base.arch, ph.excluded)
    total = th.total_steps(math.ceil(len(data.train) / dh.batch_size))
    if ph.end > total:
        raise ConfigError(f"--end {ph.end} is past the training budget of {total} steps; pruning must end "
                          "within the budget (lower --end or raise --steps/--epochs)")
    network = Network(base.arch, {n: np.ones(base.arch.layer(n).weight_shape, dtype=bool) for n in names}, None)
    run_id = rundir.run_id("prune", canonical(groups))
    out = options.out or rundir.default_out("prune", canonical(groups))
    options = dataclasses.replace(options, out=out)
    pruner: list[GradualPruning] = []

    def prepare(model: nn.Module, network: Network, data: Any) -> list[Any]:
        layers = {n: getattr(model, n) for n in names}
        ckpt = out / CHECKPOINT
        resuming = ckpt.exists()
        if resuming:  # the saved masks must be in place before the loop loads the saved weights
            state = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
            for n, module in layers.items():
                module.set_mask(state[f"{n}.mask"])
        cb = GradualPruning(layers, ph.sparsity, initial=ph.initial_sparsity, begin=ph.begin, end=ph.end,
                            frequency=ph.frequency, global_prune=ph.global_prune)
        if ph.begin == 0 and not resuming:
            cb.prune(0)
        pruner.append(cb)
        return [cb]

    def finish(model: nn.Module, network: Network, data: Any, summary: dict[str, Any]) -> None:
        summary.update(_pruning_summary(ph, names, model))
        summary["pruning_steps"] = pruner[0].history
        if summary["status"] != "completed":
            summary["pruned_test_accuracy"] = None
            return
        summary["pruned_test_accuracy"] = summary["final_test_accuracy"]
        write_topology(model, network.arch, out / TOPOLOGY,
                      _meta(ph, network.arch, names, run_id, summary["final_test_accuracy"]))

    return execute("prune", groups, options, network=network, prepare=prepare, finish=finish)


# ------------------------------------------------------------------------------------------------ one-shot

def _source(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    hp = rundir.read_hparams(run)
    if hp.get("command") != "train":
        raise UserError(f"--from {run}: a {hp.get('command')!r} run; one-shot pruning takes a finished train run")
    summary = rundir.read_summary(run)
    if summary.get("status") != "completed":
        raise UserError(f"--from {run}: the run's status is {summary.get('status')!r}, not 'completed'")
    if not (run / CHECKPOINT).exists():
        raise UserError(f"--from {run}: no {CHECKPOINT}")
    return hp, summary


def _load_layers(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load effective dense weights and biases into ``model``, whose sparse layers keep their own masks."""
    for name, module in model.named_modules():
        sub = {k.removeprefix(f"{name}."): v for k, v in state.items() if name and k.rsplit(".", 1)[0] == name}
        if sub:
            module.load_state_dict(sub, strict=not hasattr(module, "mask_dense"))


def run_oneshot(groups: list[Any], options: RunOptions, given: set[str] | None = None) -> dict[str, Any]:
    """Prune the final weights of a finished train run (``--from``) at once, without retraining, and
    measure the pruned model's accuracy. ``given``: the option names set explicitly (model and data options
    among them must agree with the source run; training options are ignored, nothing is trained)."""
    ph: PruneHparams = groups[-1]
    source = Path(ph.from_run)  # type: ignore[arg-type]
    src_hp, src_summary = _source(source)
    src_groups = [build(cls, src_hp.get("hparams", {}), f"{source}/hparams.json") for cls in TRAIN_GROUPS]
    for group, theirs in zip(groups, src_groups):
        for f in dataclasses.fields(group):
            if f.name in SOURCE_KEYS and f.name in (given or set()) and getattr(group, f.name) != getattr(theirs, f.name):
                raise ConfigError(f"--{f.name.replace('_', '-')} {getattr(group, f.name)!r} differs from the run "
                                  f"being pruned ({source}: {getattr(theirs, f.name)!r}); leave it out")
    dh, mh, _ = src_groups
    if options.threads:
        torch.set_num_threads(options.threads)
    data = cached_dataset(dh.dataset, options.data_dir, dh.validation, options.mirror, not options.quiet)
    network = network_for(mh, data)
    names = prunable(network.arch, ph.excluded)
    canon = canonical(groups)
    run_id = rundir.run_id("prune", canon)
    out = options.out or rundir.default_out("prune", canon)
    full = {k: v for g in [*src_groups, ph] for k, v in g.to_dict().items()}
    done = rundir.prepare(out, "prune", canon, full)
    if done is not None:
        return done
    started = time.perf_counter()
    model, network = build_network(mh, data, network)
    payload = torch.load(source / CHECKPOINT, map_location="cpu", weights_only=False)
    model.load_state_dict(payload["model"])
    dense_loss, dense_acc = evaluate(model, data.test)

    state = dense_state(model)
    current = weight_masks(model, network.arch)
    masks = magnitude_masks({n: state[f"{n}.weight"] for n in names}, ph.sparsity, global_prune=ph.global_prune,
                            keep={n: torch.from_numpy(current[n]) for n in names})
    pruned_masks = {n: m.numpy() for n, m in masks.items()}
    pruned_masks.update({n: m for n, m in network.masks.items() if n not in pruned_masks})
    pruned_net = Network(network.arch, pruned_masks, None)
    pruned = instantiate(network.arch, pruned_masks, init="sparse", backend=mh.backend)
    _load_layers(pruned, state)
    test_loss, test_acc = evaluate(pruned, data.test)
    record: dict[str, Any] = {"step": 0, "epoch": 0.0, "test_loss": test_loss, "test_accuracy": test_acc}
    if data.validation is not None:
        record["val_loss"], record["val_accuracy"] = evaluate(pruned, data.validation)
    metrics = [record]

    for snap in sorted(source.glob("weights-step*.pt")):  # so that --init rewind:THIS_RUN[@STEP] works
        with atomic_path(out / snap.name) as tmp:
            shutil.copyfile(snap, tmp)
    with atomic_path(out / CHECKPOINT) as tmp:
        torch.save({"step": 0, "model": pruned.state_dict(), "metrics": metrics}, tmp)
    atomic_write_text(out / METRICS, "".join(json.dumps(m, sort_keys=True) + "\n" for m in metrics))
    write_topology(pruned, network.arch, out / TOPOLOGY, _meta(ph, network.arch, names, run_id, test_acc))

    result = LoopResult("completed", 0, metrics, time.perf_counter() - started)
    summary = summarise(result, pruned, pruned_net, run_id, "prune")
    summary.update(_pruning_summary(ph, names, pruned))
    summary.update({"pruned_test_accuracy": test_acc, "pruned_test_loss": test_loss, "dense_test_accuracy": dense_acc,
                    "dense_test_loss": dense_loss, "from_run": str(source), "from_run_id": src_hp.get("run_id")})
    rundir.write_summary(out, summary)
    return summary
