"""Dynamic sparse training: SET (Mocanu et al. 2018) and RigL (Evci et al. 2020) as a loop callback.

Every ``interval`` steps until ``end`` (a fraction of the budget), each sparse layer drops the ``k`` active
connections of smallest magnitude and grows ``k`` others, ``k = round(f(t) * nnz)`` with the cosine decay
``f(t) = fraction / 2 * (1 + cos(pi * t / end_step))``: SET grows at random, RigL where the magnitude of the
dense gradient of the current batch is largest. Candidates to grow are every position not active after the
drop (RigL's rule: a just-dropped connection may come back).

- nnz per layer stays exactly constant;
- a grown weight starts at zero, and its optimiser state (momentum, Adam's moments) is zero;
- a dropped weight is gone from the parameters and from the optimiser's state, under both backends.

RigL's dense gradient is never formed from a dense weight: the layer's input ``x`` and output gradient
``dy`` of the update step's batch are kept (hooks armed only for that step) and the gradient ``dy^T x`` (a
convolution's ``conv2d_weight``) is scored in row blocks of bounded size. SET's random draws come from a
generator seeded by the run's seed, the step and the layer, so a resumed run draws the same connections.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from sparsetopo.nn import SparseConv2d, SparseLinear
from sparsetopo.nn.layers import sparse_layers

METHODS = ("none", "set", "rigl")
DISTRIBUTIONS = ("uniform", "erk")
BLOCK_ELEMENTS = 1 << 24  # dense gradient entries scored at once


def drop_fraction(step: int, fraction: float, end_step: int) -> float:
    """The cosine-decayed fraction of each layer's connections replaced at ``step``."""
    if end_step <= 0 or step > end_step:
        return 0.0
    return fraction / 2 * (1 + math.cos(math.pi * step / end_step))


def _keys(layer: nn.Module) -> np.ndarray:
    """The active connections as sorted flat positions ``row * cols + col`` of the flattened weight."""
    indptr, indices = layer.structure()
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    return rows * layer._cols + indices.astype(np.int64)


def _mask_of(layer: nn.Module, keys: np.ndarray) -> Any:
    rows, cols = divmod(keys, layer._cols)
    if isinstance(layer, SparseLinear):
        return sp.csr_array((np.ones(keys.size, dtype=bool), (rows, cols)), shape=(layer._rows, layer._cols))
    dense = np.zeros(layer._rows * layer._cols, dtype=bool)
    dense[keys] = True
    return dense.reshape(layer.weight_shape)


def _top_inactive(scores_block: Any, rows: int, cols: int, active: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` flat positions not in ``active`` with the largest score, ties to the lowest position;
    ``scores_block(r0, r1)`` gives the (r1 - r0, cols) block of scores of rows r0..r1."""
    step = max(1, BLOCK_ELEMENTS // max(cols, 1))
    best_keys = np.zeros(0, dtype=np.int64)
    best_scores = np.zeros(0, dtype=np.float64)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        block = np.abs(scores_block(r0, r1).astype(np.float64)).reshape(-1)
        base = r0 * cols
        lo, hi = np.searchsorted(active, [base, r1 * cols])
        block[active[lo:hi] - base] = -np.inf
        take = min(k, block.size)
        idx = np.argpartition(-block, take - 1)[:take] if take < block.size else np.arange(block.size)
        idx = idx[np.isfinite(block[idx])]
        best_keys = np.concatenate([best_keys, idx + base])
        best_scores = np.concatenate([best_scores, block[idx]])
        if best_keys.size > k:
            order = np.lexsort((best_keys, -best_scores))[:k]
            best_keys, best_scores = best_keys[order], best_scores[order]
    order = np.lexsort((best_keys, -best_scores))[:k]
    return np.sort(best_keys[order])


class DynamicSparsity:
    """The loop callback: updates every sparse layer's connections on the schedule (module docstring)."""

    name = "dynamic_sparsity"
    changes_structure = True  # a resumed run gets its saved structure back before its weights

    def __init__(self, model: nn.Module, method: str, *, interval: int, fraction: float, end_step: int,
                 seed: int, optimizer_ref: list[torch.optim.Optimizer] | None = None) -> None:
        if method not in ("set", "rigl"):
            raise ValueError(f"method {method!r}")
        self.method, self.interval, self.fraction, self.end_step, self.seed = method, interval, fraction, end_step, seed
        self.layers = dict(sparse_layers(model))
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self._captured: dict[str, dict[str, torch.Tensor]] = {}
        self._hooks = []
        if method == "rigl":
            for name, layer in self.layers.items():
                self._hooks.append(layer.register_forward_hook(self._forward_hook(name)))

    # -- capture of x and dy on the update step's batch (RigL)
    def _armed(self) -> bool:
        nxt = self.step + 1
        return nxt % self.interval == 0 and nxt <= self.end_step

    def _forward_hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if module.training and torch.is_grad_enabled() and output.requires_grad and self._armed():
                got = self._captured.setdefault(name, {})
                got["x"] = inputs[0].detach()

                def keep(grad: torch.Tensor) -> None:
                    got["dy"] = grad.detach()

                output.register_hook(keep)
        return hook

    def _gradient_block(self, layer: nn.Module, name: str) -> Any:
        got = self._captured.get(name, {})
        x, dy = got.get("x"), got.get("dy")
        if x is None or dy is None:
            raise RuntimeError(f"RigL: no gradient captured for layer {name} at step {self.step}")
        if isinstance(layer, SparseConv2d):
            grad = torch.nn.grad.conv2d_weight(x, layer.weight_shape, dy, stride=layer.stride,
                                               padding=layer.padding, dilation=layer.dilation)
            flat = grad.reshape(layer._rows, layer._cols).cpu().numpy()
            return lambda r0, r1: flat[r0:r1]
        x2, dy2 = x.reshape(-1, layer._cols), dy.reshape(-1, layer._rows)
        return lambda r0, r1: (dy2[:, r0:r1].t() @ x2).cpu().numpy()

    # -- the update
    def on_step_end(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.step = step
        if step % self.interval != 0 or step > self.end_step:
            self._captured.clear()
            return
        f = drop_fraction(step, self.fraction, self.end_step)
        record: dict[str, Any] = {"step": step, "fraction": f, "layers": {}}
        for i, (name, layer) in enumerate(self.layers.items()):
            keys = _keys(layer)
            k = int(round(f * keys.size))
            total = layer._rows * layer._cols
            k = min(k, keys.size) if total > keys.size else 0
            if k > 0:
                values = layer.weight_values_csr().abs().cpu().numpy().astype(np.float64)
                drop = np.lexsort((keys, values))[:k]  # smallest magnitude, ties to the lowest position
                kept = np.delete(keys, drop)
                if self.method == "set":
                    grown = self._random_inactive(kept, total, k, step, i)
                else:
                    grown = _top_inactive(self._gradient_block(layer, name), layer._rows, layer._cols, kept, k)
                new = np.union1d(kept, grown)
                layer.set_mask(_mask_of(layer, new), optimizer)
                changed = int(np.setdiff1d(new, keys, assume_unique=True).size)
            else:
                changed = 0
            indptr, indices = layer.structure()  # over the flattened weight: rows are outputs
            degrees = np.diff(indptr)
            record["layers"][name] = {"changed": changed / max(keys.size, 1), "nnz": int(layer.nnz),
                                      "out_degree_min": int(degrees.min()), "out_degree_max": int(degrees.max()),
                                      "out_degree_std": float(degrees.std()),
                                      "outputs_connected": int(np.count_nonzero(degrees)),
                                      "inputs_connected": int(np.unique(indices).size)}
        self.history.append(record)
        self._captured.clear()

    def _random_inactive(self, kept: np.ndarray, total: int, k: int, step: int, layer_index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, step, layer_index])
        free = total - kept.size
        if free <= 4 * k or free < 1 << 22:  # enumerate the complement when it is small
            mask = np.ones(total, dtype=bool)
            mask[kept] = False
            candidates = np.flatnonzero(mask)
            return np.sort(rng.choice(candidates, size=k, replace=False))
        chosen: np.ndarray = np.zeros(0, dtype=np.int64)
        while chosen.size < k:  # rejection sampling over a huge, mostly empty layer
            draw = np.unique(rng.integers(0, total, size=2 * (k - chosen.size)))
            draw = draw[~np.isin(draw, kept) & ~np.isin(draw, chosen)]
            chosen = np.union1d(chosen, draw[: k - chosen.size])
        return chosen[:k]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))
        self.history = list(state.get("history", []))

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()


def structure_topology(model: nn.Module, meta: dict[str, Any]) -> Any:
    """The model's sparse layers as a Topology (for ``topology.npz``), built from the connections alone
    for linear layers (no dense mask), weight-level masks for convolutions."""
    from sparsetopo.topology import Topology

    layers, kms, names = [], [], []
    for name, layer in sparse_layers(model):
        indptr, indices = layer.structure()
        if isinstance(layer, SparseConv2d):
            mask = layer.mask_dense().cpu().numpy().astype(bool)
            layers.append(mask.any(axis=(2, 3)).T)
            kms.append(mask)
        else:
            csr = sp.csr_array((np.ones(indices.size, dtype=bool), indices, indptr), shape=(layer._rows, layer._cols))
            layers.append(csr.T.tocsr())
            kms.append(None)
        names.append(name)
    return Topology(layers, names=names, kernel_masks=kms, meta=meta)
