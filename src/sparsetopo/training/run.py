"""A training run end to end: description -> checks -> data, model -> loop -> run directory files.

Every input is checked before anything is written: a run that is refused leaves no trace in its ``--out``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsetopo.data import Dataset, load_dataset
from sparsetopo.data.factory import dataset_info, load_factory_dataset, with_validation
from sparsetopo.desc.factories import is_factory
from sparsetopo.desc.identity import RunDesc, bind_references, resolve_references, sibling_locator
from sparsetopo.errors import ConfigError
from sparsetopo.fileio import FolderLock, atomic_write_json
from sparsetopo.models import instantiate
from sparsetopo.models.sparse import Network, resolve_network
from sparsetopo.system import default_threads
from sparsetopo.topology import load_topology, save_topology
from sparsetopo.topology.spec import agreed_density
from sparsetopo.training import rundir
from sparsetopo.training.dst import DynamicSparsity, structure_topology
from sparsetopo.training.hparams import DataHparams, DSTHparams, ModelHparams, TrainHparams, resolve_device
from sparsetopo.training.loop import CHECKPOINT, Callback, LoopResult, train
from sparsetopo.training.rewind import apply_rewind, check_rewind, save_snapshot
from sparsetopo.version import __version__


@dataclass
class RunOptions:
    """Options that do not change a run's result (and so are not part of its name)."""

    out: Path | None = None
    data_dir: str | None = None
    mirror: str | None = None
    quiet: bool = False
    checkpoint_every: int | None = None
    snapshot_steps: tuple[int, ...] = ()  # also save the weights at these steps (step 0 always is)


@dataclass(frozen=True)
class Placed:
    """A run placed in its directory: ``desc`` names it (other runs as ``{run:ID}``); ``refs`` records where
    those runs are, relative to ``out``; :meth:`concrete` is what the run reads (the references located)."""

    desc: RunDesc
    out: Path
    refs: dict[str, str]

    def concrete(self) -> RunDesc:
        return resolve_references(self.desc, sibling_locator(self.out.resolve(), self.refs))

    def finished(self) -> dict[str, Any] | None:
        """The summary when ``out`` holds this run, finished; None when it holds it unfinished or nothing.
        A directory holding another run is refused."""
        return rundir.finished_summary(self.out) if rundir.check_same_run(self.out, self.desc) else None


def with_threads(desc: RunDesc) -> RunDesc:
    """``desc`` with its thread count fixed (default: ``$OMP_NUM_THREADS``, else every core it may use) and
    its device made concrete (``auto``: CUDA, else MPS, else the CPU)."""
    if desc.get("threads") is None:
        desc = desc.replace(threads=default_threads())
    device = desc.get("device")
    return desc if device is None or device.kind != "auto" else desc.replace(device=resolve_device(device))


def place(desc: RunDesc, out: Path | None) -> Placed:
    """Fix the thread count, name other runs by id, and choose the directory (default ``runs/<run id>``)."""
    desc, found = bind_references(with_threads(desc))
    out = Path(out) if out is not None else desc.default_dir()
    base = out.resolve()
    refs = {**rundir.recorded_hints(out), **{rid: os.path.relpath(folder, base) for rid, folder in found.items()}}
    for rid in desc.references():
        refs.setdefault(rid, os.path.join("..", rid))
    return Placed(desc, out, refs)


@contextlib.contextmanager
def run_threads(threads: int) -> Iterator[None]:
    """torch (and so the sparse kernels) at ``threads`` threads for the run; the caller's count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=4)
def cached_dataset(name: str, data_dir: str | None, validation: int, mirror: str | None, progress: bool) -> Dataset:
    if is_factory(name):
        data = load_factory_dataset(name)
        return with_validation(data, validation) if validation else data
    return load_dataset(name, data_dir, validation=validation, download_missing=True, mirror=mirror, progress=progress)


def network_for(mh: ModelHparams, dataset: str, *, sample: bool = True) -> Network:
    spec = dataset_info(dataset)
    if is_factory(mh.model):
        return factory_network(mh, spec.input_shape, spec.num_classes, sample=sample)
    if mh.model_args is not None:
        raise ConfigError(f"--model-args: {mh.model} takes no arguments (only a model factory does); use --widths")
    return resolve_network(mh.model, spec.input_shape, spec.num_classes, topology=mh.topology, scale=mh.scale,
                           widths=mh.widths, seed=mh.seed, sample=sample)


def factory_network(mh: ModelHparams, input_shape: tuple[int, int, int], num_classes: int, *,
                    sample: bool = True) -> Network:
    """A user's model (``--model package.module:factory``), its weights drawn from ``mh.seed`` and
    ``--topology`` applied by ``sparsify`` to its hidden layers."""
    from sparsetopo.models.factory import arch_of, build_factory_model
    from sparsetopo.models.sparsify import sparsify
    if mh.widths is not None:
        raise ConfigError(f"--widths: a model factory ({mh.model}) takes its sizes from --model-args")
    if mh.scale is not None and mh.scale.kind == "connections":
        raise ConfigError(f"--scale {mh.scale}: widening a model factory's layers needs its own arguments; build it "
                          "wider with --model-args and give the density (random:density=D)")
    torch.manual_seed(mh.seed)
    model = build_factory_model(mh.model, mh.model_args, input_shape, num_classes)
    arch = arch_of(mh.model, model)
    spec = mh.topology
    if mh.scale is not None:
        if spec.kind == "dense":
            raise ConfigError(f"--scale {mh.scale} asks for density {mh.scale.density:g}, but --topology dense has "
                              "density 1; use --topology random (or radix)")
        if not (spec.kind == "random" or (spec.kind == "radix" and spec.fitted)):
            raise ConfigError(f"--scale {mh.scale}: --topology {spec} brings its own densities; a model factory takes "
                              "--scale only with random:... or radix:density=D; drop --scale")
        spec = dataclasses.replace(spec, density=agreed_density(spec, mh.scale))
    if spec.kind == "dense" or not sample:
        return Network(arch, {}, None, module=model)
    init = mh.init.kind if mh.init.kind in ("sparse", "dense") else "sparse"
    topology: Any = load_topology(spec.path) if spec.kind == "file" else spec
    sparsify(model, topology, backend=mh.backend, init=init, seed=mh.seed)
    return Network(arch, {}, None, module=model)


@contextlib.contextmanager
def deterministic_accelerator(kind: str) -> Iterator[None]:
    """On CUDA, for the run, the deterministic algorithms wherever torch has them (cuDNN without
    autotuning, cuBLAS with a fixed workspace): the same seed then gives the same numbers on the same GPU
    and software. An operation with no deterministic CUDA kernel still runs (with a warning), so such runs
    may differ in the last bits. The caller's settings come back after the run."""
    if kind != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
              torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[0], before[1]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])


def steps_per_epoch(dh: DataHparams) -> int:
    return math.ceil((dataset_info(dh.dataset).train_examples - dh.validation) / dh.batch_size)


def check_train(desc: RunDesc) -> None:
    """Every refusal a training run can give, without loading data or drawing a topology: the dataset split,
    the network (shapes, densities, a topology file that exists), and the ``--init`` snapshot."""
    dh: DataHparams = desc.group(DataHparams)
    mh: ModelHparams = desc.group(ModelHparams)
    size = dataset_info(dh.dataset).train_examples
    if dh.validation >= size:
        raise ConfigError(f"--validation {dh.validation}: {dh.dataset} has {size} training examples; hold out fewer")
    if mh.topology.kind != "file" or Path(mh.topology.path).exists():
        network_for(mh, dh.dataset, sample=False)
    elif not _pending(mh.topology.path):
        raise ConfigError(f"--topology {mh.topology}: no such file {mh.topology.path}")
    if mh.init.kind == "rewind" and not _pending(mh.init.run):
        check_rewind(mh.init)
    device = desc.get("device")
    if device is not None and device.kind not in ("cpu", "auto") and mh.backend == "sparse":
        raise ConfigError(f"--backend sparse: the sparse kernels run on the CPU; on --device {device} use --backend "
                          "masked (or auto, which keeps every layer masked there)")
    if device is not None:
        resolve_device(device)  # refuses an accelerator that is not there
    if desc.get("dst") != "none" and mh.topology.kind == "dense":
        raise ConfigError(f"--dst {desc.get('dst')}: dynamic sparse training changes the connections of sparse "
                          "layers; give a sparse --topology (random, radix or file:)")


def _pending(path: str) -> bool:
    """A reference to a run of a sweep that has not run yet (checked when it has)."""
    return "{run:" in path


def build_network(mh: ModelHparams, network: Network, device: str = "cpu") -> nn.Module:
    """The model with its topology applied, initialised from ``mh.seed`` (on the CPU, so that the same seed
    gives the same initial weights on any device). The ``sparse`` backend's kernels run on the CPU: on an
    accelerator ``auto`` keeps every layer masked."""
    if network.module is not None:  # a user's model: built and sparsified with its network
        return network.module
    init = mh.init.kind if mh.init.kind in ("sparse", "dense") else "sparse"
    torch.manual_seed(mh.seed)
    backend = "masked" if device != "cpu" and mh.backend == "auto" else mh.backend
    return instantiate(network.arch, network.masks, init=init, backend=backend)


def layer_table(model: nn.Module, network: Network) -> list[dict[str, Any]]:
    rows = []
    for layer in network.arch.layers:
        module = model.get_submodule(layer.name)
        nnz = int(getattr(module, "nnz", layer.weights))
        rows.append({"name": layer.name, "kind": layer.kind, "shape": list(layer.weight_shape), "nnz": nnz,
                     "density": nnz / layer.weights, "sparse": hasattr(module, "nnz")})
    return rows


def _device_name(model: nn.Module) -> str:
    device = next(iter(model.parameters())).device
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def summarise(result: LoopResult, model: nn.Module, network: Network, desc: RunDesc) -> dict[str, Any]:
    layers = layer_table(model, network)
    return {
        "run_id": desc.run_id,
        "command": desc.kind,
        "status": result.status,
        "diverged_step": result.diverged_step,
        "final_test_accuracy": result.final_test_accuracy,
        "best_test_accuracy": result.best_test_accuracy,
        "steps": result.steps,
        "wall_seconds": round(result.wall_seconds, 3),
        "cpu_seconds": round(result.cpu_seconds, 3),
        "eval_cpu_seconds": round(result.eval_cpu_seconds, 3),
        "layers": layers,
        "weights_total": sum(int(torch.Size(l["shape"]).numel()) for l in layers),
        "weights_nonzero": sum(l["nnz"] for l in layers),
        "sparsetopo": __version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": _device_name(model),
        "machine": platform.machine(),
    }


Prepare = Callable[[nn.Module, Network, Dataset], list[Callback]]
Finish = Callable[[nn.Module, Network, Dataset, dict[str, Any]], None]


def execute(placed: Placed, options: RunOptions, *, check: Callable[[RunDesc], None] = check_train,
            network: Callable[[RunDesc], Network] | None = None, prepare: Prepare | None = None,
            finish: Finish | None = None) -> dict[str, Any]:
    """Run a placed description: the shared skeleton of ``train`` and ``prune``. ``check`` refuses bad input
    before anything is written; ``network`` builds the network (default: from the topology spec);
    ``prepare`` returns loop callbacks; ``finish`` adds to the summary and writes extra files before the
    summary is written."""
    finished = placed.finished()
    if finished is not None:
        return finished
    concrete = placed.concrete()
    check(concrete)
    out = placed.out
    device = resolve_device(concrete.group(TrainHparams).device)
    with FolderLock(out, "run"), run_threads(concrete.get("threads")), deterministic_accelerator(device.kind):
        dh: DataHparams = concrete.group(DataHparams)
        mh: ModelHparams = concrete.group(ModelHparams)
        th: TrainHparams = concrete.group(TrainHparams)
        data = cached_dataset(dh.dataset, options.data_dir, dh.validation, options.mirror, not options.quiet)
        net = network(concrete) if network is not None else network_for(mh, dh.dataset)
        model = build_network(mh, net, device.kind)
        if device.kind != "cpu":
            model, data = model.to(device.torch), data.to(device.torch)
        if mh.init.kind == "rewind":
            apply_rewind(model, mh.init)
        rundir.claim(out, placed.desc, placed.refs)
        if not (out / CHECKPOINT).exists():
            save_snapshot(model, out, 0)
        callbacks: list[Callback] = [Snapshots(out, options.snapshot_steps)] if options.snapshot_steps else []
        callbacks += prepare(model, net, data) if prepare else []
        dh_dst = concrete.group(DSTHparams)
        dynamic = None
        if dh_dst.dst != "none":
            dynamic = DynamicSparsity(model, dh_dst.dst, interval=dh_dst.dst_interval, fraction=dh_dst.dst_fraction,
                                      end_step=round(dh_dst.dst_end * th.total_steps(steps_per_epoch(dh))),
                                      seed=mh.seed)
            callbacks.append(dynamic)
        result = train(model, data, dh, th, seed=mh.seed, out=out, callbacks=callbacks,
                       checkpoint_every=options.checkpoint_every, quiet=options.quiet)
        summary = summarise(result, model, net, placed.desc)
        if dynamic is not None:
            dynamic.remove()
            write_dynamic_results(out, model, dynamic, summary)
        if finish is not None:
            finish(model, net, data, summary)
        rundir.write_summary(out, summary)
    return summary


CONNECTIVITY = "connectivity.json"


def write_dynamic_results(out: Path, model: nn.Module, dynamic: DynamicSparsity, summary: dict[str, Any]) -> None:
    """A dynamic run's final structure (``topology.npz``, retrainable with ``--topology file:``) and its
    connectivity history (``connectivity.json``: per update, each layer's changed fraction and degrees)."""
    topo = structure_topology(model, {"kind": "dynamic", "method": dynamic.method, "run_id": summary["run_id"]})
    save_topology(topo, out / "topology.npz")
    atomic_write_json(out / CONNECTIVITY, dynamic.history)
    changed = [sum(v["changed"] for v in r["layers"].values()) / max(len(r["layers"]), 1) for r in dynamic.history]
    summary["dst"] = {"method": dynamic.method, "updates": len(dynamic.history),
                      "mean_changed_fraction": sum(changed) / len(changed) if changed else 0.0}


class Snapshots:
    """Save the weights at chosen steps (for ``--init rewind:RUN@STEP``)."""

    name = "snapshots"

    def __init__(self, out: Path, steps: tuple[int, ...]) -> None:
        self.out, self.steps = out, set(steps)

    def on_step_end(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if step in self.steps:
            save_snapshot(model, self.out, step)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
