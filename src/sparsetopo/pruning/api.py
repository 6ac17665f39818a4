"""Pruning in your own training loop, on any model.

    pruner = GradualPruner(model, 0.9, begin=1000, end=4000, frequency=100, optimizer=opt)
    for step in ...:
        loss.backward(); opt.step(); pruner.step()          # prunes on the cubic schedule (Zhu & Gupta)

    report = oneshot_prune(model, 0.9, scope="global")       # the smallest weights, at once

The pruned layers (every ``nn.Linear``/``nn.Conv2d`` unless ``layers`` names some) become masked
``SparseLinear``/``SparseConv2d`` modules keeping their weights; sparse layers already there keep their
connections and lose more. Removed weights are zero and stay zero under any optimiser: the layers multiply by
their mask, so the gradient there is zero, and the optimiser's state at a removed weight (momentum, Adam's
moments) is zeroed when it is removed. The masks are buffers: they are in ``state_dict()``, survive
``copy.deepcopy`` and move with ``.to(device)``. To restore a pruned model, rebuild it, create the pruner
and call ``pruner.load_state_dict(saved["pruner"])`` (the masks) before ``model.load_state_dict(saved["model"])``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from sparsetopo.errors import ConfigError
from sparsetopo.models.sparsify import _replacement, check_convs, replace_module, weight_modules
from sparsetopo.nn import SparseConv2d, SparseLinear
from sparsetopo.pruning.gradual import GradualPruning
from sparsetopo.pruning.magnitude import layer_sparsity, magnitude_masks

SCOPES = ("layer", "global")


def _swap_parameters(optimizer: torch.optim.Optimizer | None, old: nn.Module, new: nn.Module) -> None:
    """Point ``optimizer`` at ``new``'s parameters where it held ``old``'s, with their state, so that a
    pruner made after the optimiser still trains the layers it replaced. A sparse-backend layer's
    nnz-sized state (momentum of its values) is laid out in the masked layer's weight shape."""
    if optimizer is None:
        return
    old_weight = old.weight_values if getattr(old, "backend", "masked") != "masked" and hasattr(old, "weight_values") \
        else old.weight
    pairs = [(old_weight, new.weight)] + ([(old.bias, new.bias)] if old.bias is not None else [])

    def moved(value: object, before: torch.Tensor, after: torch.Tensor) -> object:
        if not isinstance(value, torch.Tensor) or value.shape == after.shape or value.shape != before.shape:
            return value
        dense = torch.zeros(after.shape, dtype=value.dtype, device=value.device)
        dense[new.mask.bool()] = value  # CSR order is row-major: the order of the mask's true entries
        return dense

    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            for before, after in pairs:
                if p is before:
                    group["params"][i] = after
                    if before in optimizer.state:
                        optimizer.state[after] = {k: moved(v, before, after)
                                                  for k, v in optimizer.state.pop(before).items()}


def masked_layers(model: nn.Module, layers: Iterable[str] | None,
                  optimizer: torch.optim.Optimizer | None = None) -> dict[str, nn.Module]:
    """The layers to prune, as masked sparse layers: plain ones replaced (weights kept, nothing removed
    yet), sparse ones switched to the masked backend."""
    import fnmatch

    found = weight_modules(model)
    if layers is not None:
        patterns = [layers] if isinstance(layers, str) else list(layers)
        names = [n for n, _ in found]
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise ConfigError(f"layers pattern {pattern!r} matches no weight layer; they are: {', '.join(names)}")
        found = [(n, m) for n, m in found if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not found:
        raise ConfigError("the model has no nn.Linear or nn.Conv2d to prune")
    check_convs(found)  # refused before any layer is replaced, not half-way through the model
    out: dict[str, nn.Module] = {}
    for name, module in found:
        if isinstance(module, (SparseLinear, SparseConv2d)):
            if module.backend != "masked":  # masks change while pruning: the same layer, masked backend
                mask = module.mask_dense().cpu().numpy()
                bias = module.bias is not None
                if isinstance(module, SparseLinear):
                    same: nn.Module = SparseLinear(module.in_features, module.out_features, mask, bias=bias,
                                                   backend="masked")
                else:
                    same = SparseConv2d(module.in_channels, module.out_channels, module.kernel_size, mask,
                                        stride=module.stride, padding=module.padding, bias=bias, backend="masked",
                                        dilation=module.dilation)
                same = same.to(device=module.weight_values.device, dtype=module.weight_values.dtype)
                same.load_state_dict(module.state_dict())
                _swap_parameters(optimizer, module, same)
                replace_module(model, name, same)
                module = same
            out[name] = module
            continue
        # a plain layer: the same layer, masked, its weights kept and nothing removed yet
        new = _replacement(name, module, torch.ones(module.weight.shape, dtype=torch.bool).numpy(), "keep", "masked")
        _swap_parameters(optimizer, module, new)
        replace_module(model, name, new)
        out[name] = new
    return out


class GradualPruner:
    """Zhu & Gupta's gradual magnitude pruning in a hand-written loop: call :meth:`step` after each
    optimiser step. Between ``begin`` and ``end`` (optimiser steps), every ``frequency`` steps, each pruned
    layer (``scope="layer"``) or all of them together (``"global"``) are cut to the cubic schedule's sparsity,
    ``sparsity`` from ``end`` on. Sparsity counts the dense layer's weights: a layer that is sparse already
    (a sparsified model) keeps what it lacks and is cut further once the schedule passes its sparsity."""

    def __init__(self, model: nn.Module, sparsity: float, *, begin: int, end: int, frequency: int = 100,
                 layers: Iterable[str] | None = None, initial: float = 0.0, scope: str = "layer",
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        if scope not in SCOPES:
            raise ConfigError(f"scope {scope!r} is not allowed; choose one of: {', '.join(SCOPES)}")
        self.model, self.optimizer = model, optimizer
        self.layers = masked_layers(model, layers, optimizer)
        self.schedule = GradualPruning(self.layers, sparsity, initial=initial, begin=begin, end=end,
                                       frequency=frequency, global_prune=scope == "global")
        self.steps = 0
        if begin == 0:
            self.schedule.prune(0, optimizer)

    def step(self) -> None:
        self.steps += 1
        self.schedule.on_step_end(self.steps, self.model, self.optimizer)  # type: ignore[arg-type]

    @property
    def sparsity(self) -> dict[str, float]:
        """Each pruned layer's current sparsity."""
        return layer_sparsity({n: m.mask_dense() for n, m in self.layers.items()})

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, **self.schedule.state_dict(),
                "masks": {n: m.mask_dense().cpu() for n, m in self.layers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step count and the masks (before loading the model's weights)."""
        unknown = sorted(set(state.get("masks", {})) - set(self.layers))
        if unknown:
            raise ConfigError(f"the saved pruner prunes layer(s) {', '.join(unknown)}, which this one does not")
        for name, mask in state.get("masks", {}).items():
            self.layers[name].set_mask(mask, self.optimizer)
        self.steps = int(state.get("steps", 0))
        self.schedule.load_state_dict({"history": state.get("history", []), "floor": state.get("floor", {})})


def oneshot_prune(model: nn.Module, sparsity: float, *, scope: str = "layer", layers: Iterable[str] | None = None,
                  optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
    """Remove the smallest-magnitude weights at once: each chosen layer to ``sparsity`` (``scope="layer"``)
    or one threshold over all of them (``"global"``). Returns each layer's sparsity."""
    if scope not in SCOPES:
        raise ConfigError(f"scope {scope!r} is not allowed; choose one of: {', '.join(SCOPES)}")
    chosen = masked_layers(model, layers, optimizer)
    weights = {n: m.dense_weight() for n, m in chosen.items()}
    keep = {n: m.mask_dense() for n, m in chosen.items()}
    masks = magnitude_masks(weights, sparsity, global_prune=scope == "global", keep=keep)
    for name, module in chosen.items():
        module.set_mask(masks[name], optimizer)
    return layer_sparsity({n: m.mask_dense() for n, m in chosen.items()})
