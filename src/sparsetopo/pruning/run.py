"""``prune`` runs: gradual pruning while training, and one-shot pruning of a finished train run.

Both write the usual run files (``hparams.json``, ``metrics.jsonl``, ``checkpoint.pt``, ``summary.json``)
plus ``topology.npz``: the pruned structure of every weight layer, for ``train --topology file:...``.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsetopo.desc.identity import RunDesc
from sparsetopo.desc.status import RunStatus
from sparsetopo.errors import ConfigError, UserError
from sparsetopo.fileio import FolderLock, atomic_path
from sparsetopo.models import instantiate
from sparsetopo.models.lenet import ModelArch
from sparsetopo.models.sparse import Network
from sparsetopo.pruning.api import masked_layers
from sparsetopo.pruning.gradual import GradualPruning
from sparsetopo.pruning.hparams import PRUNE_GROUPS, PruneHparams
from sparsetopo.pruning.magnitude import layer_sparsity, magnitude_masks
from sparsetopo.topology import Topology, save_topology
from sparsetopo.training import rundir
from sparsetopo.training.hparams import TRAIN_GROUPS, DataHparams, ModelHparams, TrainHparams
from sparsetopo.training.loop import (
    CHECKPOINT,
    METRICS,
    LoopResult,
    LoopState,
    evaluation,
    save_checkpoint,
    write_metrics,
)
from sparsetopo.training.rewind import weight_state
from sparsetopo.training.run import (
    RunOptions,
    build_network,
    cached_dataset,
    check_train,
    execute,
    network_for,
    place,
    run_threads,
    steps_per_epoch,
    summarise,
)
from sparsetopo.training.safeload import load_checkpoint_file

__all__ = ["PRUNE_GROUPS", "TOPOLOGY", "check_prune", "run_prune", "weight_masks"]

TOPOLOGY = "topology.npz"
# Options of the dense run that one-shot pruning must agree with when they are given.
SOURCE_KEYS = ("dataset", "model", "widths", "topology", "scale")


def run_prune(desc: RunDesc, options: RunOptions, given: set[str] | None = None) -> dict[str, Any]:
    """Run a ``prune`` description; ``given``: the option names set explicitly (for one-shot pruning, the
    model and data options among them must agree with the run being pruned)."""
    if desc.group(PruneHparams).method == "oneshot":
        return run_oneshot(desc, options, given or set())
    return run_gradual(desc, options)


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


def check_prune(desc: RunDesc) -> None:
    """Every refusal a prune run can give before it loads data (see :func:`check_train`)."""
    dh: DataHparams = desc.group(DataHparams)
    mh: ModelHparams = desc.group(ModelHparams)
    th: TrainHparams = desc.group(TrainHparams)
    ph: PruneHparams = desc.group(PruneHparams)
    if desc.get("dst") != "none":
        raise ConfigError(f"--dst {desc.get('dst')}: dynamic sparse training is a train run; prune runs keep "
                          "--dst none")
    if ph.method == "oneshot":
        if "{run:" not in str(ph.from_run):
            _source(Path(str(ph.from_run)))
        return
    check_train(desc)
    if mh.topology.kind != "dense":
        raise ConfigError(f"--topology {mh.topology}: gradual pruning starts from a dense network; use --topology "
                          "dense (the default)")
    if mh.backend == "sparse":
        raise ConfigError("--backend sparse: gradual pruning changes the masks while training, which needs "
                          "--backend masked (or auto)")
    prunable(network_for(mh, dh.dataset, sample=False).arch, ph.excluded)
    total = th.total_steps(steps_per_epoch(dh))
    if ph.end > total:
        raise ConfigError(f"--end {ph.end} is past the training budget of {total} steps; pruning must end "
                          "within the budget (lower --end or raise --steps/--epochs)")


def weight_masks(model: nn.Module, arch: ModelArch) -> dict[str, np.ndarray]:
    """Every weight layer's bool mask in PyTorch layout (all true for a plain dense layer)."""
    out = {}
    for layer in arch.layers:
        module = model.get_submodule(layer.name)
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
    masks = {n: model.get_submodule(n).mask_dense() for n in names}
    removed = sum(int((~m).sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return {"method": ph.method, "target_sparsity": ph.sparsity, "global_prune": ph.global_prune,
            "pruned_layers": names, "layer_sparsity": layer_sparsity(masks),
            "sparsity_reached": removed / total}


def _meta(ph: PruneHparams, arch: ModelArch, names: list[str], run_id: str, accuracy: float | None) -> dict[str, Any]:
    return {"kind": "pruned", "method": ph.method, "sparsity": ph.sparsity, "global": ph.global_prune,
            "model": arch.name, "pruned_layers": names, "run_id": run_id, "pruned_test_accuracy": accuracy}


# ------------------------------------------------------------------------------------------------ gradual

def run_gradual(desc: RunDesc, options: RunOptions) -> dict[str, Any]:
    """Train from dense and prune on the cubic schedule; the masks are fixed after ``end``."""
    ph: PruneHparams = desc.group(PruneHparams)
    pruner: list[GradualPruning] = []
    names: list[str] = []

    def network(concrete: RunDesc) -> Network:
        base = network_for(concrete.group(ModelHparams), concrete.group(DataHparams).dataset)
        names.extend(prunable(base.arch, ph.excluded))
        if base.module is not None:  # a user's model: its pruned layers become masked layers, nothing removed yet
            masked_layers(base.module, names)
            return base
        return Network(base.arch, {n: np.ones(base.arch.layer(n).weight_shape, dtype=bool) for n in names}, None)

    placed = place(desc, options.out)
    out = placed.out

    def prepare(model: nn.Module, network: Network, data: Any) -> list[Any]:
        layers = {n: model.get_submodule(n) for n in names}
        resuming = (out / CHECKPOINT).exists()  # the loop puts the saved masks back before the weights
        cb = GradualPruning(layers, ph.sparsity, initial=ph.initial_sparsity, begin=ph.begin, end=ph.end,
                            frequency=ph.frequency, global_prune=ph.global_prune)
        if ph.begin == 0 and not resuming:
            cb.prune(0)
        pruner.append(cb)
        return [cb]

    def finish(model: nn.Module, network: Network, data: Any, summary: dict[str, Any]) -> None:
        summary.update(_pruning_summary(ph, names, model))
        summary["pruning_steps"] = pruner[0].history
        if summary["status"] != RunStatus.COMPLETED:
            summary["pruned_test_accuracy"] = None
            return
        summary["pruned_test_accuracy"] = summary["final_test_accuracy"]
        write_topology(model, network.arch, out / TOPOLOGY,
                       _meta(ph, network.arch, names, summary["run_id"], summary["final_test_accuracy"]))

    return execute(placed, options, check=check_prune, network=network, prepare=prepare, finish=finish)


# ------------------------------------------------------------------------------------------------ one-shot

def _source(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    hp = rundir.read_hparams(run)
    if hp.get("command") != "train":
        raise UserError(f"--from {run}: a {hp.get('command')!r} run; one-shot pruning takes a finished train run")
    summary = rundir.read_summary(run)
    if summary.get("status") != RunStatus.COMPLETED:
        raise UserError(f"--from {run}: the run's status is {summary.get('status')!r}, not 'completed'")
    if not (run / CHECKPOINT).exists():
        raise UserError(f"--from {run}: no {CHECKPOINT}")
    return hp, summary


def _load_layers(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load weights (a :func:`weight_state`) into ``model``, whose sparse layers keep their own masks."""
    for name, module in model.named_modules():
        sub = {k.removeprefix(f"{name}."): v for k, v in state.items() if name and k.rsplit(".", 1)[0] == name}
        if not sub:
            continue
        if hasattr(module, "mask_dense") and "weight_values" in sub:  # values at the source's connections
            ip, ix = module.structure()
            src = torch.zeros(int(np.prod(module.weight_shape)), dtype=sub["weight_values"].dtype)
            rows = np.repeat(np.arange(len(sub["weight_indptr"]) - 1), np.diff(sub["weight_indptr"].numpy()))
            cols = int(np.prod(module.weight_shape[1:]))
            src[torch.from_numpy(rows * cols + sub["weight_indices"].numpy().astype(np.int64))] = sub["weight_values"]
            sub = {"weight": src.reshape(module.weight_shape), **({"bias": sub["bias"]} if "bias" in sub else {})}
        module.load_state_dict(sub, strict=not hasattr(module, "mask_dense"))


def run_oneshot(desc: RunDesc, options: RunOptions, given: set[str]) -> dict[str, Any]:
    """Prune the final weights of a finished train run (``--from``) at once, without retraining, and
    measure the pruned model's accuracy. Training options are ignored (nothing is trained)."""
    placed = place(desc, options.out)
    finished = placed.finished()
    if finished is not None:
        return finished
    concrete = placed.concrete()
    check_prune(concrete)
    ph: PruneHparams = concrete.group(PruneHparams)
    source = Path(str(ph.from_run))
    src_hp, _ = _source(source)
    where = f"{source}/hparams.json"
    try:
        src_groups = [cls(**{k: v for k, v in src_hp.get("hparams", {}).items()
                             if k in {f.name for f in dataclasses.fields(cls)}}) for cls in TRAIN_GROUPS]
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    src = RunDesc("train", tuple(src_groups))
    for name in SOURCE_KEYS:
        if name in given and str(desc.get(name)) != str(src.get(name)):
            raise ConfigError(f"--{name} {str(desc.get(name))!r} differs from the run being pruned "
                              f"({source}: {str(src.get(name))!r}); leave it out")
    dh: DataHparams = src.group(DataHparams)
    mh: ModelHparams = src.group(ModelHparams)
    out = placed.out
    with FolderLock(out, "run"), run_threads(concrete.get("threads")):
        data = cached_dataset(dh.dataset, options.data_dir, dh.validation, options.mirror, not options.quiet)
        network = network_for(mh, dh.dataset)
        names = prunable(network.arch, ph.excluded)
        started, cpu_started = time.perf_counter(), time.process_time()
        model = build_network(mh, network)
        model.load_state_dict(load_checkpoint_file(source / CHECKPOINT, ("model",))["model"])
        rundir.claim(out, placed.desc, placed.refs)
        spe = steps_per_epoch(dh)
        dense_record = evaluation(model, data, 0, spe)

        state = weight_state(model)
        layers = {n: model.get_submodule(n) for n in names}
        weights = {n: m.dense_weight() if hasattr(m, "dense_weight") else m.weight.detach() for n, m in layers.items()}
        current = weight_masks(model, network.arch)
        masks = magnitude_masks(weights, ph.sparsity, global_prune=ph.global_prune,
                                keep={n: torch.from_numpy(current[n]) for n in names})
        if network.module is not None:  # a user's model: the same modules, its pruned layers masked
            pruned = copy.deepcopy(model)
            for name, layer in masked_layers(pruned, names).items():
                layer.set_mask(masks[name])
            pruned_net = Network(network.arch, {}, None, module=pruned)
        else:
            pruned_masks = {n: m.numpy() for n, m in masks.items()}
            pruned_masks.update({n: m for n, m in network.masks.items() if n not in pruned_masks})
            pruned_net = Network(network.arch, pruned_masks, None)
            pruned = instantiate(network.arch, pruned_masks, init="sparse", backend=mh.backend)
            _load_layers(pruned, state)
        record = evaluation(pruned, data, 0, spe)
        metrics = [record]

        for snap in sorted(source.glob("weights-step*.pt")):  # so that --init rewind:THIS_RUN[@STEP] works
            with atomic_path(out / snap.name) as tmp:
                shutil.copyfile(snap, tmp)
        save_checkpoint(out / CHECKPOINT, pruned, None, LoopState(0, metrics, time.perf_counter() - started), [])
        write_metrics(out / METRICS, metrics)
        write_topology(pruned, network.arch, out / TOPOLOGY,
                       _meta(ph, network.arch, names, placed.desc.run_id, record["test_accuracy"]))

        result = LoopResult(RunStatus.COMPLETED, 0, metrics, time.perf_counter() - started,
                            cpu_seconds=time.process_time() - cpu_started)
        summary = summarise(result, pruned, pruned_net, placed.desc)
        summary.update(_pruning_summary(ph, names, pruned))
        summary.update({"pruned_test_accuracy": record["test_accuracy"], "pruned_test_loss": record["test_loss"],
                        "dense_test_accuracy": dense_record["test_accuracy"],
                        "dense_test_loss": dense_record["test_loss"],
                        "from_run": str(placed.desc.get("from_run")), "from_run_id": src_hp.get("run_id")})
        rundir.write_summary(out, summary)
    return summary
