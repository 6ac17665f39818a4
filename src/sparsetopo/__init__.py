"""sparsetopo: build, train and study sparse neural network topologies."""

import os as _os

# Fair sharing of the cores. OpenMP threads that wait for work spin on their core by default; two torch
# processes side by side (two runs, a run beside the tests) then take turns spinning, and each can be 2-30x
# slower than alone. Waiting passively costs a run alone nothing measurable. It only takes effect when set
# before torch is first imported: the CLI and every sweep worker import sparsetopo first; a Python user
# who imports torch before sparsetopo sets OMP_WAIT_POLICY=PASSIVE in the environment instead.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
