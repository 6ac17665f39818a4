"""sparsetopo: build, train and study sparse neural network topologies.

The functions for your own models are importable from here (they load torch on first use):
``sparsify``, ``densify``, ``GradualPruner``, ``oneshot_prune`` and ``run`` (the CLI's commands as a function).
"""

import os as _os
from typing import Any

from sparsetopo.version import __version__

# Fair sharing of the cores. OpenMP threads that wait for work spin on their core by default; two torch
# processes side by side (two runs, a run beside the tests) then take turns spinning, and each can be 2-30x
# slower than alone. Waiting passively costs a run alone the wake-ups of its sleeping threads (on a 2-core
# virtual machine 1.8-3x against ACTIVE: README, "Side by side"). It only takes effect when set
# before torch is first imported: the CLI and every sweep worker import sparsetopo first; a Python user
# who imports torch before sparsetopo sets OMP_WAIT_POLICY=PASSIVE in the environment instead.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["GradualPruner", "__version__", "densify", "oneshot_prune", "run", "sparsify"]


def __getattr__(name: str) -> Any:
    if name in ("sparsify", "densify"):
        from sparsetopo.models import sparsify as module

        return getattr(module, name)
    if name in ("GradualPruner", "oneshot_prune"):
        from sparsetopo.pruning import api

        return getattr(api, name)
    if name == "run":
        from sparsetopo.runs import run

        return run
    raise AttributeError(f"module 'sparsetopo' has no attribute {name!r}")
