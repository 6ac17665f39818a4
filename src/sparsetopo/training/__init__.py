"""Training: hyperparameter groups (``hparams``), the one loop (``loop``), runs and their directories
(``run``, ``rundir``), and the Python entry point equivalent to the CLI (``api.run``)."""
