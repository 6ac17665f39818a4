"""Read a run's checkpoint and report each layer's shape, nnz and density as actually trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sparsetopo.errors import UserError
from sparsetopo.training import rundir
from sparsetopo.training.loop import CHECKPOINT
from sparsetopo.training.safeload import load_checkpoint_file


def _layer_names(state: dict[str, torch.Tensor]) -> list[str]:
    names = []
    for key in state:
        layer = key.rsplit(".", 1)[0]
        if layer not in names and not key.endswith("bias"):
            names.append(layer)
    return names


def inspect_run(run: Path) -> dict[str, Any]:
    """Per-layer nnz of the trained weights, counted from the checkpoint's tensors (not from the config)."""
    hparams = rundir.read_hparams(run)
    path = run / CHECKPOINT
    if not path.exists():
        raise UserError(f"{run}: no {CHECKPOINT} to inspect")
    state = load_checkpoint_file(path, ("model",))["model"]
    layers = []
    for name in _layer_names(state):  # weight layers in model order
        if f"{name}.weight" in state:
            weight = state[f"{name}.weight"]
            mask = state.get(f"{name}.mask")
            nonzero = int((weight != 0).sum()) if mask is None else int((weight != 0)[mask.bool()].sum())
            allowed = weight.numel() if mask is None else int(mask.bool().sum())
            shape, total = list(weight.shape), weight.numel()
        else:  # nnz-sized storage: values plus index arrays
            values = state.get(f"{name}.weight_values")
            if values is None:
                continue
            nonzero = allowed = int(values.numel())
            shape_t = state.get(f"{name}.weight_shape_")
            shape = [int(v) for v in shape_t] if shape_t is not None else []
            total = int(torch.Size(shape).numel()) if shape else allowed
        layers.append({"name": name, "shape": shape, "connections": allowed, "nonzero_weights": nonzero,
                       "density": allowed / total if total else 0.0})
    total = sum(int(torch.Size(l["shape"]).numel()) for l in layers if l["shape"])
    return {"run": str(run), "command": hparams.get("command"), "layers": layers,
            "weights_total": total, "weights_nonzero": sum(l["connections"] for l in layers)}


def format_inspection(report: dict[str, Any]) -> str:
    lines = [f"{report['run']} ({report['command']})", f"{'layer':<8} {'shape':<20} {'connections':>12} {'density':>9}"]
    for l in report["layers"]:
        shape = "x".join(map(str, l["shape"]))
        lines.append(f"{l['name']:<8} {shape:<20} {l['connections']:>12,} {l['density']:>9.4f}")
    lines.append(f"total: {report['weights_nonzero']:,} of {report['weights_total']:,} weights")
    return "\n".join(lines)
