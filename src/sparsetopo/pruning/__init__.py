"""Pruning-derived topologies: one-shot and gradual magnitude pruning.

``cubic_sparsity`` is the gradual schedule, ``magnitude_masks`` picks the weights to remove,
``GradualPruning`` prunes during training (a loop callback), and :mod:`sparsetopo.pruning.run` runs the
``prune`` command, whose ``topology.npz`` is retrained with ``train --topology file:RUN/topology.npz``.
"""

from sparsetopo.pruning.gradual import GradualPruning
from sparsetopo.pruning.hparams import PRUNE_GROUPS, PruneHparams
from sparsetopo.pruning.magnitude import layer_sparsity, magnitude_masks, pruned_count
from sparsetopo.pruning.schedule import cubic_sparsity, is_pruning_step, pruning_steps

__all__ = ["GradualPruning", "PRUNE_GROUPS", "PruneHparams", "cubic_sparsity", "is_pruning_step",
           "layer_sparsity", "magnitude_masks", "pruned_count", "pruning_steps"]
