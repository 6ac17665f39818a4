"""Magnitude pruning: which weights to remove so that a layer (or all layers together) reaches a sparsity.

Weights are ranked by magnitude with weights already removed ranked first, and ties broken by position
(a stable sort of the flattened weight), so the result is deterministic, removed weights never come back,
and each layer loses exactly ``round(sparsity * n)`` of its ``n`` weights (layerwise), or the layers
together exactly ``round(sparsity * N)`` of their ``N`` (global).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from sparsetopo.errors import ConfigError


def pruned_count(n: int, sparsity: float) -> int:
    """How many of ``n`` weights a sparsity removes: ``round(sparsity * n)``."""
    return min(n, max(0, round(sparsity * n)))


def _scores(weight: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    scores = weight.detach().abs().reshape(-1).to(torch.float64)
    if keep is not None:
        scores = scores.masked_fill(~keep.reshape(-1).bool(), -1.0)  # already removed: removed first
    return scores


def _remove_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.ones(scores.numel(), dtype=torch.bool)
    if k:
        mask[torch.argsort(scores, stable=True)[:k]] = False
    return mask


def _removed(keep: torch.Tensor | None) -> int:
    return 0 if keep is None else int((~keep.bool()).sum())


def _check_not_past(name: str, removed: int, n: int, k: int) -> None:
    if removed > k:
        raise ConfigError(f"layer {name} already lacks {removed} of its {n} weights, more than the {k} that the "
                          "target sparsity removes; choose a higher sparsity")


def magnitude_masks(weights: Mapping[str, torch.Tensor], sparsity: float, *, global_prune: bool = False,
                    keep: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Bool masks (True = kept), shaped like ``weights``, that remove the smallest-magnitude weights.

    ``weights`` maps layer names to their effective weights; ``keep`` optionally gives each layer's current
    mask (its removed weights stay removed). Layerwise, each layer loses ``round(sparsity * n)`` weights;
    with ``global_prune`` one ranking over all layers removes ``round(sparsity * N)`` in total.
    """
    if not 0 <= sparsity < 1:
        raise ConfigError(f"sparsity {sparsity} must be in [0, 1)")
    keep = keep or {}
    if not global_prune:
        out = {}
        for name, w in weights.items():
            k = pruned_count(w.numel(), sparsity)
            _check_not_past(name, _removed(keep.get(name)), w.numel(), k)
            out[name] = _remove_smallest(_scores(w, keep.get(name)), k).reshape(w.shape)
        return out
    names = list(weights)
    scores = torch.cat([_scores(weights[n], keep.get(n)) for n in names]) if names else torch.zeros(0)
    k = pruned_count(scores.numel(), sparsity)
    _check_not_past("+".join(names), sum(_removed(keep.get(n)) for n in names), scores.numel(), k)
    flat = _remove_smallest(scores, k)
    out, start = {}, 0
    for n in names:
        size = weights[n].numel()
        out[n] = flat[start:start + size].reshape(weights[n].shape)
        start += size
    return out


def layer_sparsity(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The fraction of weights each mask removes."""
    return {n: float((~m.bool()).sum()) / m.numel() for n, m in masks.items()}
