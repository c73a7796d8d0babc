"""``hydra/launcher=gpus``: run a sweep's jobs in parallel, one per visible GPU, each job in a
fresh process that sees only its own device; without GPUs, ``n_workers`` CPU workers that
split the cores (OMP_NUM_THREADS & co, torch's intra-op threads follow OMP_NUM_THREADS).

    python launch.py -m hydra/launcher=gpus lr=1e-4,2e-4 epochs=1,2,3
    python launch.py -m hydra/launcher=gpus hydra.launcher.gpus=[0,2] ...        # these GPUs
    python launch.py -m hydra/launcher=gpus hydra.launcher.jobs_per_gpu=2 ...     # 2 per GPU
    python launch.py -m hydra/launcher=gpus hydra.launcher.n_workers=4 ...        # CPU only

Why not an existing launcher (measured, see shared/STACK.md trap 13): the joblib launcher
reuses its worker processes, so a CUDA_VISIBLE_DEVICES set per job comes too late once a
worker has initialised CUDA; submitit's local executor gives every job all GPUs; Ray needs a
Ray cluster. What is reused: Hydra's own job machinery (``load_sweep_config`` + ``run_job``,
exactly what the basic and joblib launchers call: same output dirs, .hydra/ files, logging,
callbacks, JobReturn) and the standard library's ``multiprocessing`` spawn context for a fresh
interpreter per job. What is hand-written (``_gpu_pool.py``): the device/thread assignment
and the small loop that keeps one process per free slot. Not a ``ProcessPoolExecutor``: it
cannot give each job its own environment at process start, and one worker that dies (OOM
kill, segfault, os._exit) marks the whole pool broken and fails every pending job; here such a
job alone comes back as a failed JobReturn.

Configs reach the workers fully resolved (``${hydra:...}``, ``${now:...}`` and custom
resolvers are evaluated in the launching process, where they work).
"""
# No `from __future__ import annotations` here: Hydra's plugin scan executes this module before
# it is in sys.modules, and dataclasses then fail on string annotations.
from dataclasses import dataclass
from typing import List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class GpuPoolLauncherConf:
    _target_: str = "hydra_plugins.forgetting_plugins.gpu_launcher.GpuPoolLauncher"
    # Devices to use. null: CUDA_VISIBLE_DEVICES of the launching process when set, else every
    # GPU nvidia-smi lists, else none (CPU mode). []: CPU mode even when GPUs are there.
    gpus: Optional[List[str]] = None
    # Concurrent jobs per GPU (small models can share a device).
    jobs_per_gpu: int = 1
    # Concurrent jobs in CPU mode.
    n_workers: int = 2
    # Threads per job (OMP/MKL/OpenBLAS/NumExpr env); null: usable cores // concurrent jobs.
    threads_per_job: Optional[int] = None
    # Kill a job that runs longer than this (it comes back failed); null: no limit.
    timeout_min: Optional[float] = None


ConfigStore.instance().store(
    group="hydra/launcher", name="gpus", node=GpuPoolLauncherConf, provider="forgetting"
)


class GpuPoolLauncher(Launcher):
    def __init__(self, gpus: Optional[Sequence[str]] = None, jobs_per_gpu: int = 1,
                 n_workers: int = 2, threads_per_job: Optional[int] = None,
                 timeout_min: Optional[float] = None) -> None:
        self.gpus = None if gpus is None else [str(g) for g in gpus]
        self.jobs_per_gpu = int(jobs_per_gpu)
        self.n_workers = int(n_workers)
        self.threads_per_job = threads_per_job
        self.timeout_min = timeout_min
        if self.jobs_per_gpu < 1 or self.n_workers < 1:
            raise ValueError("hydra.launcher: jobs_per_gpu and n_workers must be >= 1")
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        from . import _gpu_pool  # lazy: keeps Hydra's plugin scan fast

        return _gpu_pool.launch(self, job_overrides, initial_job_idx)
