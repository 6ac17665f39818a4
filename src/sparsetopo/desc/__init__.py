"""The run description at the bottom of the package: the hyperparameter framework every command uses, a
run's identity (canonical form, hash, directory) and its status. Imports nothing else of sparsetopo but
its errors."""

from sparsetopo.desc.hparams import Hparams, add_arguments, build, collect, hp, load_toml
from sparsetopo.desc.identity import RunDesc, bind_references, resolve_references, run_id
from sparsetopo.desc.status import FINISHED, RunStatus

__all__ = ["Hparams", "RunDesc", "RunStatus", "FINISHED", "add_arguments", "bind_references", "build", "collect",
           "hp", "load_toml", "resolve_references", "run_id"]
