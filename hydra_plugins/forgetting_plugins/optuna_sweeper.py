"""``hydra/sweeper=optuna_ask_tell``: an Optuna sweeper on Optuna's ask/tell API.

Why hand-written: Hydra's own ``hydra-optuna-sweeper`` 1.3 pins ``optuna>=2.10,<3``; with
optuna 2.10 its SQLite storage breaks under SQLAlchemy 2 and optuna-dashboard needs optuna
>= 3.1 (shared/STACK.md trap 1); it also crashes on a NaN objective (hydra issue 2237) and
restarts its job numbering on a rerun, overwriting earlier trials' job dirs. This one keeps
that plugin's search-space grammar (``hydra.core.override_parser``) and config shape, on the
optuna pinned in pyproject (ask/tell: ``study.ask(fixed_distributions)`` / ``study.tell``).

    python launch.py -m hydra/sweeper=optuna_ask_tell \\
        '+hydra.sweeper.params.lr="tag(log, interval(1e-5, 1e-3))"' \\
        hydra.sweeper.directions=[maximize,maximize] hydra.sweeper.n_trials=20

or a YAML (conf/hydra/sweeper/optuna.yaml is the project's):

    hydra:
      sweeper:
        study_name: lr_epochs
        storage: sqlite:///${hydra.sweep.dir}/optuna.db   # default; or journal:///abs/x.log
        sampler: {name: tpe, seed: 0}                        # tpe | nsga2 | random
        directions: [maximize, maximize]
        objectives: [math/accuracy, safety/rate]             # names (dashboard, mappings)
        n_trials: 20
        n_jobs: null                                         # null: the launcher's parallelism
        params:
          lr: tag(log, interval(1e-5, 1e-3))                 # FloatDistribution(log=True)
          epochs: int(interval(1, 3))                        # IntDistribution(1, 3)
          lora.r: choice(4, 8, 16)                           # CategoricalDistribution
          warmup: range(0, 30, 10)                           # IntDistribution(0, 20, step=10)

Search-space grammar (Hydra's): ``interval(a, b)`` float, ``int(interval(a, b))`` int,
``tag(log, ...)`` log scale, ``choice(...)``/``a,b,c``/``glob(...)``/``shuffle(...)``
categorical, ``range(start, stop[, step])`` stepped, with Hydra's meaning of range (stop
excluded: ``range(1, 3)`` is 1 or 2; Hydra's optuna sweeper included the stop). Command-line
overrides of the task are fixed values (and replace a ``params`` entry of the same key), or a
search space of their own when they use the grammar.

Return of the task function: a float or a sequence of floats, one per direction (or a
mapping, when ``objectives`` names its keys). A job that raised, returned None, or a NaN/inf
is told to Optuna as FAIL, and the sweep goes on. After each batch,
``<sweep dir>/optuna_results.yaml`` holds the storage, the counts and the best trial(s) (the
Pareto front with several objectives); ``make dashboard SWEEP=<sweep dir>`` opens the study.

Several workers, one study (_optuna_workers.py): start the same command N times (hosts, SLURM
array tasks) with one ``storage``: ``journal:///abs/path.log`` (Optuna's JournalStorage, a file
on a shared filesystem, NFS-safe locking) or a database URL (``postgresql://...``; SQLite for
one host only). ``n_trials`` is the study's total: a trial counts once finished (complete,
pruned, failed by its job), running or waiting; a rerun into the same study asks only what is
missing. Each worker beats for its running trials every ``heartbeat_interval`` s; a running
trial silent for ``grace_period`` s (default 2 x interval: its worker was killed) is failed and
asked again with its parameters (up to ``max_retry`` times), counted once. A worker with
nothing left to ask waits for the others' running trials, to retry them if their worker dies.
Trials sample with seed + trial number (workers draw different points); a trial asked beyond
n_trials by workers asking at once, or with the parameters of an earlier trial, is not run
(FAIL, user attr ``skipped``, not counted). A batch stopped by Ctrl-C or a launcher error is
failed and asked again first on the next run. Job dirs are named by trial number, so workers
sharing a sweep dir never collide.
"""
# No `from __future__ import annotations` here: Hydra's plugin scan executes this module before
# it is in sys.modules, and dataclasses then fail on string annotations.
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe | nsga2 | random
    seed: Optional[int] = None
    # extra keyword arguments of the sampler, e.g. {population_size: 8} for nsga2
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class OptunaAskTellSweeperConf:
    _target_: str = "hydra_plugins.forgetting_plugins.optuna_sweeper.OptunaAskTellSweeper"
    study_name: str = "${hydra.job.name}"
    # null: in memory (no resume, no dashboard)
    storage: Optional[str] = "sqlite:///${hydra.sweep.dir}/optuna.db"
    sampler: SamplerConf = field(default_factory=SamplerConf)
    directions: List[str] = field(default_factory=lambda: ["minimize"])
    # names of the objectives, in the order of the task function's return (optional)
    objectives: Optional[List[str]] = None
    n_trials: int = 20  # the study's total, across workers and reruns
    n_jobs: Optional[int] = None  # trials run at once by this worker; null: the launcher's jobs
    heartbeat_interval: Optional[int] = 30  # seconds; null: no heartbeat (one worker only)
    grace_period: Optional[int] = None  # silence before a running trial is stale; null: 2 x interval
    max_retry: Optional[int] = 3  # retries of a stale trial; null: no limit
    params: Dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna_ask_tell", node=OptunaAskTellSweeperConf,
    provider="forgetting",
)


class OptunaAskTellSweeper(Sweeper):
    def __init__(self, study_name: str, storage: Optional[str], sampler: Any,
                 directions: Any, n_trials: int, n_jobs: Optional[int] = None,
                 params: Optional[Any] = None, objectives: Optional[Any] = None,
                 heartbeat_interval: Optional[int] = 30, grace_period: Optional[int] = None,
                 max_retry: Optional[int] = 3) -> None:
        from ._optuna_impl import OptunaAskTellImpl  # lazy: optuna only when sweeping

        def plain(x: Any) -> Any:
            return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else x

        self.impl = OptunaAskTellImpl(
            study_name=study_name, storage=storage, sampler=plain(sampler),
            directions=plain(directions), n_trials=n_trials, n_jobs=n_jobs,
            params=plain(params), objectives=plain(objectives),
            heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=max_retry)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config  # for Sweeper.validate_batch_is_legal
        self.hydra_context = hydra_context
        self.impl.setup(sweeper=self, hydra_context=hydra_context,
                        task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self.impl.sweep(arguments)
