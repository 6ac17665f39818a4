"""Gradual magnitude pruning as a training-loop callback (Zhu & Gupta 2017)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sparsetopo.errors import ConfigError
from sparsetopo.pruning.magnitude import layer_sparsity, magnitude_masks
from sparsetopo.pruning.schedule import check_schedule, cubic_sparsity, is_pruning_step


class GradualPruning:
    """At each pruning step, set the masks of ``layers`` so that their sparsity follows the cubic schedule.

    ``layers`` maps names to ``SparseLinear``/``SparseConv2d`` modules with the ``masked`` backend. Removed
    weights, and the optimiser's state at them, are zeroed and stay zero (the layers multiply by the mask, so
    their gradient there is zero). The masks themselves live in the model's state (and so in checkpoints);
    this callback's own state is the record of the pruning steps done.
    """

    name = "gradual_pruning"
    changes_structure = True  # a resumed run gets its saved masks back before its weights

    def __init__(self, layers: Mapping[str, nn.Module], final: float, *, initial: float = 0.0, begin: int = 2000,
                 end: int = 5000, frequency: int = 200, global_prune: bool = False) -> None:
        check_schedule(final, initial, begin, end, frequency)
        for name, module in layers.items():
            if getattr(module, "backend", None) != "masked":
                raise ConfigError(f"layer {name}: gradual pruning needs a SparseLinear/SparseConv2d with the "
                                  f"'masked' backend, got {type(module).__name__} "
                                  f"(backend {getattr(module, 'backend', None)!r}); use --backend masked")
        self.layers = dict(layers)
        self.final, self.initial = final, initial
        self.begin, self.end, self.frequency = begin, end, frequency
        self.global_prune = global_prune
        self.history: list[dict[str, Any]] = []
        # a layer that starts sparse keeps what it lacks: its target never drops below where it started
        self.floor = layer_sparsity({n: m.mask_dense() for n, m in self.layers.items()})

    def sparsity_at(self, step: int) -> float:
        return cubic_sparsity(step, self.final, self.initial, self.begin, self.end, self.frequency)

    def prune(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Prune every layer to the schedule's sparsity at ``step``."""
        target = self.sparsity_at(step)
        weights = {n: m.dense_weight() for n, m in self.layers.items()}
        keep = {n: m.mask_dense() for n, m in self.layers.items()}
        if self.global_prune or not any(self.floor.values()):
            masks = magnitude_masks(weights, target, global_prune=self.global_prune, keep=keep)
        else:
            masks = {}
            for n in self.layers:
                masks.update(magnitude_masks({n: weights[n]}, max(target, self.floor[n]), keep={n: keep[n]}))
        for name, module in self.layers.items():
            module.set_mask(masks[name], optimizer)
        self.history.append({"step": step, "sparsity": target,
                             "nnz": {n: int(m.nnz) for n, m in self.layers.items()}})

    def on_step_end(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if is_pruning_step(step, self.begin, self.end, self.frequency):
            self.prune(step, optimizer)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "floor": dict(self.floor)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.floor.update(state.get("floor", {}))
