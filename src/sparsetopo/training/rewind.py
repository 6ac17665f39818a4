"""Weight snapshots of a run, and ``--init rewind:RUN[@STEP]``: start from a run's own early weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sparsetopo.errors import ConfigError
from sparsetopo.fileio import atomic_path


def snapshot_path(run: Path, step: int) -> Path:
    return Path(run) / f"weights-step{step}.pt"


def dense_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight layer's effective dense weight (zeros at missing connections) and bias."""
    state: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if hasattr(module, "dense_weight"):
            state[f"{name}.weight"] = module.dense_weight()
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            state[f"{name}.weight"] = module.weight.detach().clone()
        else:
            continue
        if getattr(module, "bias", None) is not None:
            state[f"{name}.bias"] = module.bias.detach().clone()
    return state


def save_snapshot(model: nn.Module, run: Path, step: int) -> None:
    with atomic_path(snapshot_path(run, step)) as tmp:
        torch.save(dense_state(model), tmp)


def parse_rewind(init: str) -> tuple[Path, int]:
    spec = init.removeprefix("rewind:")
    run, _, step = spec.partition("@")
    if not run:
        raise ConfigError(f"--init {init!r}: use rewind:RUN_DIR or rewind:RUN_DIR@STEP")
    try:
        step_n = int(step) if step else 0
    except ValueError:
        raise ConfigError(f"--init {init!r}: STEP {step!r} is not an integer") from None
    return Path(run), step_n


def apply_rewind(model: nn.Module, init: str) -> None:
    """Load run RUN's weights at STEP into ``model``, keeping ``model``'s own masks (missing connections stay 0)."""
    run, step = parse_rewind(init)
    path = snapshot_path(run, step)
    if not path.exists():
        available = sorted(int(p.stem.removeprefix("weights-step")) for p in Path(run).glob("weights-step*.pt"))
        raise ConfigError(f"--init {init}: {path} does not exist; snapshots of {run}: "
                          f"{', '.join(f'@{s}' for s in available) or 'none'} (record more with --snapshot-steps)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = {k for k in model.state_dict() if k.endswith((".weight", ".bias", ".weight_values"))}
    layers = {k.rsplit(".", 1)[0] for k in own}
    missing = sorted(l for l in layers if f"{l}.weight" not in state)
    if missing:
        raise ConfigError(f"--init {init}: snapshot {path} lacks layer(s) {', '.join(missing)}")
    for name, module in model.named_modules():
        if name in layers:
            sub = {k.removeprefix(f"{name}."): v for k, v in state.items() if k.rsplit(".", 1)[0] == name}
            try:
                module.load_state_dict(sub, strict=False)
            except RuntimeError as exc:
                raise ConfigError(f"--init {init}: layer {name} does not match the snapshot ({exc})") from None
