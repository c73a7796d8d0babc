"""Several sweepers on one study: storages, heartbeat, trial accounting (see optuna_sweeper.py).

Heartbeat: Optuna's own protocol (``BaseHeartbeat``, ``fail_stale_trials``,
``RetryHeartbeatStaleTrialCallback``). A database URL is an ``RDBStorage`` with Optuna's heartbeat
(its table, the database's clock). optuna 5.0's ``JournalStorage`` has no heartbeat, so
``HeartbeatJournalStorage`` adds the equivalent: the beat is a trial system attr (wall clock:
the hosts' clocks must agree to well within ``grace_period``). Optuna beats from
``study.optimize`` only; an ask/tell sweeper whose jobs run elsewhere beats for its own running
trials from a thread (``Heartbeat``).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)
WORKER = f"{socket.gethostname()}:{os.getpid()}"
JOURNAL = "journal://"


@contextmanager
def quiet() -> Iterator[None]:
    """Optuna's experimental-API warnings and its 'heartbeat is meant for optimize()' notice."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        yield


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    def __init__(self, path: str, interval: Optional[int], grace: Optional[int],
                 callback: Optional[Callable[..., None]]) -> None:
        super().__init__(JournalFileBackend(path))  # symlink lock: works on NFS
        self.interval, self.grace, self.callback = interval, grace, callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, "heartbeat", time.time())

    def _get_stale_trial_ids(self, study_id: int) -> List[int]:
        grace = self.grace or 2 * (self.interval or 0)
        now = time.time()
        return [t._trial_id for t in self.get_all_trials(study_id, False, (TrialState.RUNNING,))
                if "heartbeat" in t.system_attrs  # a retry inherits the beat: start counts too
                and now - max(t.system_attrs["heartbeat"], t.datetime_start.timestamp()) > grace]

    def get_heartbeat_interval(self) -> Optional[int]:
        return self.interval

    def get_heartbeat_stale_trial_callback(self) -> Optional[Callable[..., None]]:
        return self.callback


def journal_path(storage: str) -> Path:
    """journal:///abs/x.log -> /abs/x.log; journal://rel/x.log -> <cwd>/rel/x.log."""
    return Path(storage[len(JOURNAL):]).absolute()


def absolute_sqlite(storage: Optional[str]) -> Optional[str]:
    """sqlite:///relative/x.db -> sqlite:////abs/relative/x.db, its directory created (a
    resumed sweep may run from another cwd; the dashboard wants a path that works anywhere).
    Other storages (postgresql://..., null) pass through."""
    prefix = "sqlite:///"
    if not storage or not storage.startswith(prefix):
        return storage
    path = storage[len(prefix):]
    if path in ("", ":memory:"):
        return storage
    absolute = Path(path).absolute()  # sqlite:////abs/x.db: path is already /abs/x.db
    absolute.parent.mkdir(parents=True, exist_ok=True)
    return prefix + str(absolute)


def open_storage(url: Optional[str], interval: Optional[int], grace: Optional[int],
                 max_retry: Optional[int]) -> tuple:
    """(storage for optuna, the URL with absolute paths). None: in memory, no heartbeat."""
    if not url:
        return None, None
    interval = int(interval) if interval else None
    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        log.warning(f"trial {trial.number} went stale (no heartbeat for its grace period, its "
                    f"worker is gone): failed, its parameters asked again")
        retry(study, trial)

    on_stale = callback if interval else None
    with quiet():
        if url.startswith(JOURNAL):
            path = journal_path(url)
            path.parent.mkdir(parents=True, exist_ok=True)
            return HeartbeatJournalStorage(str(path), interval, grace, on_stale), JOURNAL + str(path)
        url = absolute_sqlite(url)
        return RDBStorage(url, heartbeat_interval=interval, grace_period=grace,
                          heartbeat_stale_trial_callback=on_stale), url


class Heartbeat:
    """Beats for this worker's running trials every interval, from a daemon thread; beats once
    for every running trial it sees for the first time (a trial of a sweeper killed before its
    first beat, or of an older sweeper, has none and would never go stale)."""

    def __init__(self, study: optuna.Study) -> None:
        self.study, self.storage = study, study._storage
        self.enabled = is_heartbeat_enabled(self.storage)
        self.mine: Set[int] = set()
        self.seen: Set[int] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        if self.enabled:
            threading.Thread(target=self._loop, daemon=True, name="optuna-heartbeat").start()

    def beat(self, trial_id: int) -> None:
        try:
            self.storage.record_heartbeat(trial_id)
        except Exception as e:  # noqa: BLE001 - finished meanwhile, storage hiccup: next beat
            log.debug(f"heartbeat of trial id {trial_id}: {e}")

    def _loop(self) -> None:
        while not self.stop.wait(self.storage.get_heartbeat_interval()):
            with self.lock:
                ids = list(self.mine)
            for trial_id in ids:
                self.beat(trial_id)

    def add(self, trial: Any) -> None:
        with self.lock:
            self.mine.add(trial._trial_id)
            self.seen.add(trial._trial_id)
        if self.enabled:
            self.beat(trial._trial_id)

    def discard(self, trial: Any) -> None:
        with self.lock:
            self.mine.discard(trial._trial_id)

    def fail_stale(self) -> None:
        """Running trials whose beat is older than the grace period: FAIL (one worker wins),
        then retried as a WAITING trial with the same parameters (RetryHeartbeatStaleTrialCallback)."""
        if not self.enabled:
            return
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t._trial_id not in self.seen:
                self.seen.add(t._trial_id)
                self.beat(t._trial_id)
        with quiet():
            optuna.storages.fail_stale_trials(self.study)


# --------------------------------------------------------------------- accounting
def retried(trials: Sequence[FrozenTrial]) -> Set[int]:
    """Numbers of trials that were interrupted and asked again (they count once: the retry)."""
    out: Set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []))
        if "retry_of" in t.user_attrs:  # a study of the earlier sweeper
            out.add(int(t.user_attrs["retry_of"]))
    return out


def counted(trials: Sequence[FrozenTrial]) -> List[FrozenTrial]:
    """The trials that count toward n_trials: every state (finished, running, waiting) but
    those retried and those skipped (surplus, duplicate)."""
    gone = retried(trials)
    return [t for t in trials if t.number not in gone and "skipped" not in t.user_attrs]


def skip_reason(trial: FrozenTrial, trials: Sequence[FrozenTrial], n_trials: int) -> str:
    """Why a trial just asked must not run: beyond n_trials (workers asked at once), or the
    parameters of an earlier trial (never one configuration twice). "" when it may run."""
    others = [t for t in counted(trials) if t.number < trial.number]
    if len(others) >= n_trials:
        return f"surplus: the study has its n_trials={n_trials}"
    history = set(trial.system_attrs.get("retry_history", []))
    for t in others:
        if t.params == trial.params and t.number not in history:
            return f"duplicate of trial {t.number}"
    return ""


def launcher_parallelism(launcher: Any) -> int:
    """Jobs the launcher runs at once: GPUs x jobs_per_gpu (or n_workers on CPU) for
    hydra/launcher=gpus, n_jobs for joblib, array_parallelism for submitit, else 1."""
    target = str(launcher.get("_target_", ""))
    if target.endswith("GpuPoolLauncher"):
        gpus = launcher.get("gpus")
        if gpus is None:
            from ._gpu_pool import detect_gpus
            gpus = detect_gpus()
        return len(gpus) * int(launcher.get("jobs_per_gpu", 1)) if gpus \
            else int(launcher.get("n_workers", 1))
    if "joblib" in target:
        n = int(launcher.get("n_jobs", -1) or 1)
        return (os.cpu_count() or 1) if n < 0 else n
    if "submitit" in target:
        return int(launcher.get("array_parallelism", 1) or 1)
    return 1


class PerTrialSeed(optuna.samplers.BaseSampler):
    """Trial k is sampled by make(seed + k): workers that ask at once draw different points,
    and one worker draws what it drew before on a rerun. Samplers read their history from the
    study, so a fresh one per trial loses nothing."""

    def __init__(self, make: Callable[[Optional[int]], Any], seed: Optional[int]) -> None:
        self.make, self.seed = make, seed
        self.cache: Dict[int, Any] = {}

    def _for(self, trial: Any) -> Any:
        if trial.number not in self.cache:
            if len(self.cache) > 64:
                self.cache.clear()
            self.cache[trial.number] = self.make(None if self.seed is None
                                                 else int(self.seed) + trial.number)
        return self.cache[trial.number]

    def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
        return self._for(trial).sample_independent(study, trial, name, dist)

    def before_trial(self, study: Any, trial: Any) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._for(trial).after_trial(study, trial, state, values)


def dashboard_storage(sweep_dir: str) -> str:
    """What optuna-dashboard opens for a sweep dir: its journal file, or its database URL."""
    results = Path(sweep_dir) / "optuna_results.yaml"
    if not results.is_file():
        raise SystemExit(f"no Optuna study in {sweep_dir}: {results.name} is written by "
                         f"hydra/sweeper=optuna (make pareto, experiment=pareto)")
    import yaml

    storage = str(yaml.safe_load(results.read_text())["storage"] or "")
    if not storage:
        raise SystemExit(f"the study of {sweep_dir} was in memory (hydra.sweeper.storage=null)")
    return str(journal_path(storage)) if storage.startswith(JOURNAL) else storage


if __name__ == "__main__":  # make dashboard: python -m ...._optuna_workers <sweep dir>
    import sys

    print(dashboard_storage(sys.argv[1]))
