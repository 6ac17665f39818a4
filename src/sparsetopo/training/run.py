"""A training run end to end: hyperparameters -> data, model -> loop -> run directory files."""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from sparsetopo.data import Dataset, load_dataset
from sparsetopo.errors import ConfigError
from sparsetopo.models import instantiate
from sparsetopo.models.sparse import Network, resolve_network
from sparsetopo.training import rundir
from sparsetopo.training.hparams import DataHparams, ModelHparams, TrainHparams, canonical
from sparsetopo.training.loop import CHECKPOINT, Callback, LoopResult, train
from sparsetopo.training.rewind import apply_rewind, save_snapshot


@dataclass
class RunOptions:
    """Options that do not change a run's result (and so are not part of its name)."""

    out: Path | None = None
    data_dir: str | None = None
    mirror: str | None = None
    quiet: bool = False
    checkpoint_every: int | None = None
    threads: int | None = None
    snapshot_steps: tuple[int, ...] = ()  # also save the weights at these steps (step 0 always is)


@functools.lru_cache(maxsize=4)
def cached_dataset(name: str, data_dir: str | None, validation: int, mirror: str | None, progress: bool) -> Dataset:
    return load_dataset(name, data_dir, validation=validation, download_missing=True, mirror=mirror, progress=progress)


def parse_widths(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(v) for v in text.split(",")) if text else None


def network_for(mh: ModelHparams, data: Dataset) -> Network:
    return resolve_network(mh.model, data.input_shape, data.num_classes, topology=mh.topology, scale=mh.scale,
                           widths=parse_widths(mh.widths), seed=mh.seed)


def build_network(mh: ModelHparams, data: Dataset, network: Network | None = None) -> tuple[nn.Module, Network]:
    """The model with its topology applied, initialised from ``mh.seed``."""
    network = network or network_for(mh, data)
    init = mh.init if mh.init in ("sparse", "dense") else "sparse"
    torch.manual_seed(mh.seed)
    model = instantiate(network.arch, network.masks, init=init, backend=mh.backend)
    return model, network


def layer_table(model: nn.Module, network: Network) -> list[dict[str, Any]]:
    rows = []
    for layer in network.arch.layers:
        module = getattr(model, layer.name)
        nnz = int(getattr(module, "nnz", layer.weights))
        rows.append({"name": layer.name, "kind": layer.kind, "shape": list(layer.weight_shape), "nnz": nnz,
                     "density": nnz / layer.weights, "sparse": hasattr(module, "nnz")})
    return rows


def summarise(result: LoopResult, model: nn.Module, network: Network, run_id: str, command: str) -> dict[str, Any]:
    layers = layer_table(model, network)
    return {
        "run_id": run_id,
        "command": command,
        "status": result.status,
        "diverged_step": result.diverged_step,
        "final_test_accuracy": result.final_test_accuracy,
        "best_test_accuracy": result.best_test_accuracy,
        "steps": result.steps,
        "wall_seconds": round(result.wall_seconds, 3),
        "layers": layers,
        "weights_total": sum(int(torch.Size(l["shape"]).numel()) for l in layers),
        "weights_nonzero": sum(l["nnz"] for l in layers),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def execute(
    command: str,
    groups: list[Any],
    options: RunOptions,
    *,
    network: Network | None = None,
    prepare: Callable[[nn.Module, Network, Dataset], list[Callback]] | None = None,
    finish: Callable[[nn.Module, Network, Dataset, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``command`` with hyperparameter ``groups`` (Data, Model, Train, ...): the shared skeleton of
    ``train`` and ``prune``. ``prepare`` returns loop callbacks; ``finish`` adds to the summary and writes
    extra files before the summary is written."""
    dh: DataHparams = next(g for g in groups if isinstance(g, DataHparams))
    mh: ModelHparams = next(g for g in groups if isinstance(g, ModelHparams))
    th: TrainHparams = next(g for g in groups if isinstance(g, TrainHparams))
    canon = canonical(groups)
    run_id = rundir.run_id(command, canon)
    out = options.out or rundir.default_out(command, canon)
    if options.threads:
        torch.set_num_threads(options.threads)
    data = cached_dataset(dh.dataset, options.data_dir, dh.validation, options.mirror, not options.quiet)
    network = network or network_for(mh, data)  # validates the topology before anything is written
    done = rundir.prepare(out, command, canon, {k: v for g in groups for k, v in g.to_dict().items()})
    if done is not None:
        return done
    model, network = build_network(mh, data, network)
    if mh.init.startswith("rewind:"):
        apply_rewind(model, mh.init)
    if not (out / CHECKPOINT).exists():
        save_snapshot(model, out, 0)
    callbacks: list[Callback] = [Snapshots(out, options.snapshot_steps)] if options.snapshot_steps else []
    callbacks += prepare(model, network, data) if prepare else []
    result = train(model, data, dh, th, seed=mh.seed, out=out, callbacks=callbacks,
                   checkpoint_every=options.checkpoint_every, quiet=options.quiet)
    summary = summarise(result, model, network, run_id, command)
    if finish is not None:
        finish(model, network, data, summary)
    rundir.write_summary(out, summary)
    return summary


class Snapshots:
    """Save the weights at chosen steps (for ``--init rewind:RUN@STEP``)."""

    def __init__(self, out: Path, steps: tuple[int, ...]) -> None:
        self.out, self.steps = out, set(steps)

    def on_step_end(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if step in self.steps:
            save_snapshot(model, self.out, step)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def check_init(init: str) -> None:
    if init in ("sparse", "dense") or init.startswith("rewind:"):
        return
    raise ConfigError(f"--init {init!r}: use sparse, dense, rewind:RUN_DIR or rewind:RUN_DIR@STEP")
