"""Tasks as plug-ins (conf/task/*.yaml names the class with `_target_`): gsm8k and arith (math.py), sst2,
code (HumanEval pass@1), jsonl (your own data). base.Task is the interface."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from .base import Task

MATH = "math"  # the metric prefix of gsm8k and arith (and of every run dir from before tasks)
DEFAULT = {"_target_": "forgetting.tasks.math.MathTask", "name": "gsm8k", "prefix": MATH}  # a config without `task`


def task_config(cfg: DictConfig) -> DictConfig:
    t = cfg.get("task")
    return t if t is not None else OmegaConf.create({**DEFAULT, "name": cfg.get("data", {}).get("name", "gsm8k")})


def build(cfg: DictConfig) -> Task:
    """The run's task, from cfg.task (gsm8k's math task when the config has none: configs from before tasks)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    t = task_config(cfg)
    if not t.get("_target_") or not t.get("name"):
        raise ConfigError("task needs a name and a _target_ (see conf/task/*.yaml)")
    try:
        task = instantiate(t)
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"task {t.name!r}: {cause}".splitlines()[0]) from None
    if not isinstance(task, Task):
        raise ConfigError(f"task {t.name!r}: {t._target_} is not a forgetting.tasks.Task")
    return task


def is_math(cfg: DictConfig) -> bool:
    return task_config(cfg).get("prefix") == MATH
