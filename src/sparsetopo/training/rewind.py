"""Weight snapshots of a run, and ``--init rewind:RUN[@STEP]``: start from a run's own early weights.

A snapshot holds every weight layer's connected weights only (nnz-sized): a sparse layer as CSR
(``weight_indptr``, ``weight_indices``, ``weight_values`` over the flattened weight, plus ``weight_shape_``),
whatever its backend; a plain ``nn.Linear``/``nn.Conv2d`` as its dense ``weight``; and the biases. Rewinding
reads each layer's values at the *receiving* model's own connections (a connection the snapshot lacks
starts at zero), so a pruned structure can be retrained from the dense run's early weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from sparsetopo.errors import ConfigError
from sparsetopo.fileio import atomic_path
from sparsetopo.training.hparams import InitSpec
from sparsetopo.training.safeload import load_tensors


def snapshot_path(run: Path, step: int) -> Path:
    return Path(run) / f"weights-step{step}.pt"


def weight_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight layer's connected weights (CSR for sparse layers) and bias: what a snapshot holds."""
    state: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if hasattr(module, "weight_values_csr"):
            indptr, indices = module.structure()
            state[f"{name}.weight_indptr"] = torch.from_numpy(indptr.astype(np.int64))
            state[f"{name}.weight_indices"] = torch.from_numpy(indices.astype(np.int32))
            state[f"{name}.weight_values"] = module.weight_values_csr()
            state[f"{name}.weight_shape_"] = torch.tensor(list(module.weight_shape), dtype=torch.int64)
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            state[f"{name}.weight"] = module.weight.detach().clone()
        else:
            continue
        if getattr(module, "bias", None) is not None:
            state[f"{name}.bias"] = module.bias.detach().clone()
    return state


def save_snapshot(model: nn.Module, run: Path, step: int) -> None:
    with atomic_path(snapshot_path(run, step)) as tmp:
        torch.save(weight_state(model), tmp)


def _available(run: Path) -> str:
    steps = sorted(int(p.stem.removeprefix("weights-step")) for p in Path(run).glob("weights-step*.pt")
                   if p.stem.removeprefix("weights-step").isdigit())
    return ", ".join(f"@{s}" for s in steps) or "none"


def check_rewind(init: InitSpec) -> Path:
    """The snapshot file ``init`` names; refused (naming the snapshots there are) when it does not exist."""
    run = Path(init.run)
    path = snapshot_path(run, init.step)
    if not path.is_file():
        raise ConfigError(f"--init {init}: {path} does not exist; snapshots of {run}: {_available(run)} "
                          "(record more with --snapshot-steps)")
    return path


def _values_at(state: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], indptr: np.ndarray,
               indices: np.ndarray, where: str) -> torch.Tensor:
    """The snapshot's weights of layer ``name`` at the positions (CSR over the flattened weight) given."""
    rows = shape[0]
    cols = int(np.prod(shape[1:]))
    target_rows = np.repeat(np.arange(rows), np.diff(indptr))
    if f"{name}.weight_values" in state:
        saved_shape = tuple(int(v) for v in state[f"{name}.weight_shape_"].tolist())
        if saved_shape != tuple(shape):
            raise ConfigError(f"{where}: layer {name} has weight shape {saved_shape} in the snapshot, {tuple(shape)} here")
        values = state[f"{name}.weight_values"].detach().cpu()
        src = sp.csr_array((np.arange(1, values.numel() + 1, dtype=np.int64),
                            state[f"{name}.weight_indices"].numpy().astype(np.int64),
                            state[f"{name}.weight_indptr"].numpy().astype(np.int64)), shape=(rows, cols))
        pos = np.asarray(src[target_rows, indices.astype(np.int64)]).ravel() if indices.size else np.zeros(0, np.int64)
        out = torch.zeros(indices.size, dtype=values.dtype)
        hit = pos > 0
        out[torch.from_numpy(hit)] = values[torch.from_numpy(pos[hit] - 1)]
        return out
    weight = state[f"{name}.weight"]
    if tuple(weight.shape) != tuple(shape):
        raise ConfigError(f"{where}: layer {name} has weight shape {tuple(weight.shape)} in the snapshot, "
                          f"{tuple(shape)} here")
    flat = weight.detach().cpu().reshape(rows, cols)
    return flat[torch.from_numpy(target_rows), torch.from_numpy(indices.astype(np.int64))].clone()


def apply_rewind(model: nn.Module, init: InitSpec) -> None:
    """Load RUN's weights at STEP into ``model``, keeping ``model``'s own connections (the ones the snapshot
    lacks start at 0)."""
    path = check_rewind(init)
    where = f"--init {init}"
    state = load_tensors(path)
    saved_layers = {k.rsplit(".", 1)[0] for k in state if k.endswith((".weight", ".weight_values"))}
    for name, module in model.named_modules():
        sparse = hasattr(module, "weight_values_csr")
        if not (sparse or isinstance(module, (nn.Linear, nn.Conv2d))):
            continue
        if name not in saved_layers:
            raise ConfigError(f"{where}: snapshot {path} lacks layer {name}; it has {', '.join(sorted(saved_layers))}")
        with torch.no_grad():
            if sparse:
                indptr, indices = module.structure()
                values = _values_at(state, name, tuple(module.weight_shape), indptr, indices, where)
                module.load_state_dict({"weight_indptr": torch.from_numpy(indptr.astype(np.int64)),
                                        "weight_indices": torch.from_numpy(indices.astype(np.int32)),
                                        "weight_values": values}, strict=False)
            else:
                if f"{name}.weight" not in state:
                    raise ConfigError(f"{where}: layer {name} is sparse in the snapshot and dense here")
                if tuple(state[f"{name}.weight"].shape) != tuple(module.weight.shape):
                    raise ConfigError(f"{where}: layer {name} has weight shape {tuple(state[f'{name}.weight'].shape)} "
                                      f"in the snapshot, {tuple(module.weight.shape)} here")
                module.weight.copy_(state[f"{name}.weight"])
            bias = state.get(f"{name}.bias")
            if module.bias is not None and bias is not None:
                if bias.shape != module.bias.shape:
                    raise ConfigError(f"{where}: layer {name} has {bias.numel()} biases in the snapshot, "
                                      f"{module.bias.numel()} here")
                module.bias.copy_(bias)
