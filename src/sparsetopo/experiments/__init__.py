"""Experiments: TOML grids of runs, the sweep runner (local processes or Ray) and the results store.

- :func:`load_experiment` reads an experiment file under a profile and expands it into :class:`RunSpec` s,
  each named by the run id :func:`sparsetopo.runs.describe` gives it (as the CLI and the API do).
- :func:`run_sweep` runs them N at a time into an output directory, skipping those already done, resolving
  dependencies (one-shot pruning needs its dense run, retraining its pruned topology).
- :class:`ResultsStore` is the ``results.db`` of an output directory.
"""

from sparsetopo.experiments.results import ResultsStore
from sparsetopo.experiments.runner import SweepResult, run_sweep
from sparsetopo.experiments.spec import Experiment, RunSpec, find_experiment_file, load_experiment, shipped_names

__all__ = ["Experiment", "ResultsStore", "RunSpec", "SweepResult", "find_experiment_file", "load_experiment",
           "run_sweep", "shipped_names"]
