"""Hydra plugins of the forgetting project (discovered by Hydra's plugin scan of the
``hydra_plugins`` namespace package):

- ``hydra/sweeper=optuna_ask_tell``: an Optuna sweeper on Optuna's ask/tell API (optuna_sweeper.py)
- ``hydra/launcher=gpus``: one fresh process per job, one GPU each, or N CPU workers
  (gpu_launcher.py)

Modules imported by the plugin scan keep their imports light (optuna, multiprocessing
machinery are imported lazily from the ``_``-prefixed modules, which the scan skips).
"""
