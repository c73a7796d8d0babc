"""Implementation of ``hydra/sweeper=optuna_ask_tell`` (see optuna_sweeper.py for the why)."""
from __future__ import annotations

import logging
import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ._optuna_workers import (
    WORKER,
    Heartbeat,
    PerTrialSeed,
    counted,
    launcher_parallelism,
    open_storage,
    quiet,
    skip_reason,
)

log = logging.getLogger(__name__)

RESULTS_FILE = "optuna_results.yaml"
SAMPLERS = ("tpe", "nsga2", "random")


def _as_str(value: Any) -> str:
    """A value as Hydra's override grammar writes it (strings escaped, lists/dicts inline)."""
    return Override._get_value_element_as_str(value)


# --------------------------------------------------------------------- search space
@dataclass
class Param:
    """One override of every trial: a fixed override line, or a distribution to sample."""

    key: str  # the override's key element, e.g. lr, +foo, db@pkg
    fixed: Optional[str] = None
    distribution: Optional[BaseDistribution] = None
    choice_strings: Optional[Dict[Tuple[type, Any], str]] = None  # categorical: value -> str

    def render(self, value: Any = None) -> str:
        if self.fixed is not None:
            return self.fixed
        if self.choice_strings is not None:
            return f"{self.key}={self.choice_strings[(type(value), value)]}"
        return f"{self.key}={_as_str(value)}"


def _choice_value(x: Any) -> Any:
    # Optuna categorical choices are None/bool/int/float/str; lists and dicts go as strings
    return x if isinstance(x, (bool, int, float, str)) else _as_str(x)


def param_from_override(override: Override) -> Param:
    key = override.get_key_element()
    if not override.is_sweep_override():
        return Param(key=key, fixed=override.input_line)
    value = override.value()
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return Param(key, distribution=IntDistribution(value.start, value.end, log=log_scale))
        return Param(key, distribution=FloatDistribution(float(value.start), float(value.end),
                                                         log=log_scale))
    values = list(override.sweep_iterator())
    if not values:
        raise ValueError(f"empty search space: {override.input_line}")
    if override.is_range_sweep() and not value.shuffle and value.step > 0:
        # Hydra's range excludes stop: the last value is the largest one before it
        if all(isinstance(v, int) for v in values):
            return Param(key, distribution=IntDistribution(values[0], values[-1],
                                                           step=int(value.step)))
        return Param(key, distribution=FloatDistribution(float(values[0]), float(values[-1]),
                                                         step=float(value.step)))
    # choice(...), a,b,c, glob(...), shuffle(...), descending range: categorical
    choices: List[Any] = []
    strings: Dict[Tuple[type, Any], str] = {}
    for v in values:
        c = _choice_value(v)
        if (type(c), c) not in strings:
            choices.append(c)
            strings[(type(c), c)] = _as_str(v)
    return Param(key, distribution=CategoricalDistribution(choices), choice_strings=strings)


class SearchSpace:
    """``hydra.sweeper.params`` then the command line; a later override of a key replaces an
    earlier one (a command-line ``lr=1e-4`` fixes an lr that params searches)."""

    def __init__(self, overrides: Sequence[Override]) -> None:
        self.params: "OrderedDict[str, Param]" = OrderedDict()
        for override in overrides:
            param = param_from_override(override)
            name = param.key.lstrip("+~")
            self.params.pop(name, None)
            self.params[name] = param

    @property
    def distributions(self) -> Dict[str, BaseDistribution]:
        return {n: p.distribution for n, p in self.params.items() if p.distribution is not None}

    @property
    def fixed(self) -> List[str]:
        return [p.fixed for p in self.params.values() if p.fixed is not None]

    def overrides(self, trial_params: Mapping[str, Any]) -> List[str]:
        return [p.render(trial_params.get(n)) for n, p in self.params.items()]


# --------------------------------------------------------------------- objective values
def objective_values(ret: JobReturn, n_objectives: int,
                     names: Optional[Sequence[str]]) -> Tuple[Optional[List[float]], str]:
    """(values, "") for a usable return, else (None, why the trial failed)."""
    if ret.status != JobStatus.COMPLETED:
        return None, f"job failed: {ret._return_value!r}"
    value = ret._return_value
    if value is None:
        return None, "the task function returned None"
    if isinstance(value, Mapping):
        if not names:
            return None, "the task returned a mapping: set hydra.sweeper.objectives to its keys"
        try:
            value = [value[k] for k in names]
        except KeyError as e:
            return None, f"objective {e} missing from the returned mapping"
    values: Optional[List[float]] = None
    if not isinstance(value, (list, tuple, str, bytes)):
        try:
            values = [float(value)]
        except (TypeError, ValueError):
            values = None
    if values is None:
        try:
            if isinstance(value, (str, bytes)):
                raise TypeError
            values = [float(v) for v in value]
        except (TypeError, ValueError):
            return None, f"return value is not a float or a sequence of floats: {value!r}"
    if len(values) != n_objectives:
        return None, f"{len(values)} values returned for {n_objectives} directions: {values}"
    if not all(math.isfinite(v) for v in values):
        return None, f"non-finite objective: {values}"
    return values, ""


# --------------------------------------------------------------------- the sweeper
def make_sampler(name: str, seed: Optional[int], kwargs: Mapping[str, Any]) -> Any:
    name = name.lower().replace("-", "").replace("_", "")
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **kwargs)
    if name in ("nsga2", "nsgaii"):
        return optuna.samplers.NSGAIISampler(seed=seed, **kwargs)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed, **kwargs)
    raise ValueError(f"hydra.sweeper.sampler.name={name!r}: one of {', '.join(SAMPLERS)}")


class OptunaAskTellImpl:
    def __init__(self, study_name: str, storage: Optional[str], sampler: Any,
                 directions: Any, n_trials: int, n_jobs: Optional[int], params: Optional[Any],
                 objectives: Optional[Any], heartbeat_interval: Optional[int] = 30,
                 grace_period: Optional[int] = None, max_retry: Optional[int] = 3) -> None:
        self.study_name = str(study_name)
        self.storage = storage
        sampler = dict(sampler or {})
        self.sampler_name = str(sampler.get("name", "tpe"))
        self.sampler_seed = sampler.get("seed")
        self.sampler_kwargs = dict(sampler.get("kwargs") or {})
        make_sampler(self.sampler_name, None, self.sampler_kwargs)  # a bad name fails here
        if isinstance(directions, str):
            directions = [directions]
        self.directions = [str(d).lower() for d in directions]
        bad = [d for d in self.directions if d not in ("minimize", "maximize")]
        if not self.directions or bad:
            raise ValueError(f"hydra.sweeper.directions: minimize/maximize, got {directions}")
        self.objectives = [str(o) for o in objectives] if objectives else None
        if self.objectives and len(self.objectives) != len(self.directions):
            raise ValueError(f"hydra.sweeper.objectives {self.objectives} and directions "
                             f"{self.directions} differ in length")
        self.n_trials = int(n_trials)
        self.n_jobs = None if n_jobs is None else max(1, int(n_jobs))
        self.heartbeat = (heartbeat_interval, grace_period, max_retry)
        self.params = {str(k): v for k, v in (params or {}).items()}
        self.sweeper: Any = None
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher: Any = None

    def setup(self, *, sweeper: Any, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.sweeper = sweeper
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)
        if self.n_jobs is None:  # as many trials at once as the launcher runs jobs
            self.n_jobs = max(1, launcher_parallelism(config.hydra.launcher))

    # ----------------------------------------------------------------- study
    def _open_study(self) -> optuna.Study:
        storage, self.storage = open_storage(self.storage, *self.heartbeat)
        study = optuna.create_study(study_name=self.study_name, storage=storage,
                                    directions=self.directions, load_if_exists=True)
        have = [d.name.lower() for d in study.directions]
        if have != self.directions:
            raise ValueError(f"study {self.study_name!r} in {self.storage} has directions {have}, "
                             f"not {self.directions}: use another study_name or sweep dir")
        study.sampler = PerTrialSeed(
            lambda seed: make_sampler(self.sampler_name, seed, self.sampler_kwargs),
            self.sampler_seed)
        if self.objectives and list(study.metric_names or []) != self.objectives:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental API warning
                study.set_metric_names(self.objectives)
        return study

    def _ask(self, study: optuna.Study, space: SearchSpace, k: int,
             beat: Heartbeat) -> Tuple[List[Any], bool]:
        """(up to k trials to run, whether the search space looks used up). A trial asked beyond
        n_trials (another worker asked at the same time) or with the parameters of an earlier
        trial is told FAIL and marked skipped (it does not count)."""
        out: List[Any] = []
        for _ in range(k + 20):  # 20 duplicates: the search space is used up
            if len(out) == k:
                return out, False
            with quiet():
                trial = study.ask(fixed_distributions=space.distributions)
            beat.add(trial)
            trial.set_user_attr("worker", WORKER)
            for _ in range(50):  # earlier trials another worker is still sampling: their params
                trials = study.get_trials(deepcopy=False)
                if not space.distributions or all(t.params for t in trials[:trial.number]
                                                  if t.state == TrialState.RUNNING):
                    break
                time.sleep(0.1)
            why = skip_reason(trials[trial.number], trials, self.n_trials)
            if why:
                log.info(f"trial {trial.number} not run: {why}")
                trial.set_user_attr("skipped", why)
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                beat.discard(trial)
                if why.startswith("surplus"):
                    return out, False
            else:
                trial.set_user_attr("overrides", space.overrides(trial.params))
                out.append(trial)
        return out, len(out) < k

    def _subdir(self, number: int) -> Optional[str]:
        """A per-job override putting the job in the dir of its trial number, when the launcher's
        numbering (first + i) differs: other workers took the numbers in between."""
        assert self.config is not None
        template = OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")
        if not isinstance(template, str) or "${hydra.job.num}" not in template:
            return None
        return "hydra.sweep.subdir=" + _as_str(template.replace("${hydra.job.num}", str(number)))

    # ----------------------------------------------------------------- sweep
    def sweep(self, arguments: List[str]) -> Any:
        """Ask while the study counts fewer than n_trials (_optuna_workers.counted), then wait
        for the other workers' running trials (a dead worker's are failed and retried here)."""
        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None and self.n_jobs is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        from_params = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()])
        space = SearchSpace(list(from_params) + list(parser.parse_overrides(arguments)))

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        study = self._open_study()
        self.write_results(study, sweep_dir)  # where the study is, from the start (make dashboard)
        done = len(counted(study.get_trials(deepcopy=False)))
        log.info(f"Optuna study {self.study_name!r} in {self.storage or 'memory'}: {done} of "
                 f"n_trials={self.n_trials} counted; worker {WORKER}, {self.n_jobs} at once; "
                 f"sampler {self.sampler_name}, directions {self.directions}")
        log.info(f"search space: {space.distributions}; fixed: {space.fixed}")

        beat = Heartbeat(study)
        all_returns: List[Sequence[JobReturn]] = []
        try:
            while True:
                beat.fail_stale()
                trials = study.get_trials(deepcopy=False)
                waiting = sum(t.state == TrialState.WAITING for t in trials)
                todo = max(0, self.n_trials - len(counted(trials))) + waiting
                if todo == 0:
                    if not beat.enabled or not any(t.state == TrialState.RUNNING for t in trials):
                        break
                    time.sleep(min(5, beat.storage.get_heartbeat_interval()))
                    continue
                batch, used_up = self._ask(study, space, min(self.n_jobs, todo), beat)
                if batch:
                    all_returns.append(self._run(study, batch, beat))
                    self.write_results(study, sweep_dir)
                if used_up:
                    log.warning("the sampler proposes only configurations already in the "
                                "study: the search space is used up, this worker stops")
                    break
        finally:
            beat.stop.set()
        self.write_results(study, sweep_dir)
        return all_returns

    def _run(self, study: optuna.Study, trials: List[Any], beat: Heartbeat) -> Sequence[JobReturn]:
        numbers = [t.number for t in trials]
        overrides = [list(t.user_attrs["overrides"]) for t in trials]
        extra = [self._subdir(n) if n != numbers[0] + i else None for i, n in enumerate(numbers)]
        jobs = [o + [e] if e else o for o, e in zip(overrides, extra)]
        try:
            self.sweeper.validate_batch_is_legal(overrides)
            returns = self.launcher.launch(jobs, initial_job_idx=numbers[0])
        except BaseException:  # a config that does not compose, Ctrl-C, a launcher error
            retry = RetryHeartbeatStaleTrialCallback()
            for t in trials:  # not left RUNNING; asked again on the next run, counted once
                study.tell(t, state=TrialState.FAIL, skip_if_finished=True)
                with quiet():
                    retry(study, study._storage.get_trial(t._trial_id))
                beat.discard(t)
            raise
        for t, ret in zip(trials, returns):
            self._tell(study, t, ret)
            beat.discard(t)
        return returns

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> None:
        if study._storage.get_trial(trial._trial_id).state.is_finished():
            log.warning(f"trial {trial.number} was failed as stale while it ran (its heartbeat "
                        f"stalled past the grace period): result dropped, its retry reruns it")
            return
        try:
            trial.set_user_attr("output_dir", str(ret.hydra_cfg.hydra.runtime.output_dir))
        except Exception:  # noqa: BLE001 - no hydra config on a job that never started
            pass
        values, reason = objective_values(ret, len(self.directions), self.objectives)
        if values is None:
            log.warning(f"trial {trial.number} FAIL: {reason}")
            trial.set_user_attr("fail_reason", reason[:2000])
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        else:
            study.tell(trial, values=values, skip_if_finished=True)

    # ----------------------------------------------------------------- results
    def results(self, study: optuna.Study) -> Dict[str, Any]:
        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}

        def describe(t: Any) -> Dict[str, Any]:
            return {"number": t.number, "values": [float(v) for v in t.values],
                    "params": dict(t.params),
                    "overrides": list(t.user_attrs.get("overrides", [])),
                    "output_dir": t.user_attrs.get("output_dir")}

        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = [describe(t) for t in study.best_trials] if complete else []
        out: Dict[str, Any] = {
            "name": "optuna_ask_tell",
            "study_name": study.study_name,
            "storage": self.storage,
            "directions": self.directions,
            "objectives": self.objectives,
            "n_trials": self.n_trials,
            "trials": {k: v for k, v in counts.items() if v},
            "counted": len(counted(trials)),  # toward n_trials: not skipped, not retried
        }
        if len(self.directions) == 1 and complete:
            out["best_value"] = float(study.best_value)
            out["best_params"] = dict(study.best_params)
        out["best_trials"] = best  # the Pareto front with several objectives
        return out

    def write_results(self, study: optuna.Study, sweep_dir: Path) -> Path:
        path = sweep_dir / RESULTS_FILE
        tmp = path.with_suffix(f".yaml.{WORKER.replace(':', '-')}.tmp")  # workers share the dir
        tmp.write_text(yaml.safe_dump(self.results(study), sort_keys=False), encoding="utf-8")
        tmp.replace(path)
        return path
