"""Run-dir files (the unit of truth) and the W&B mirror (offline by default; docs/wandb.md): every evaluation
is a history row at its epoch (0 = the base model), the base is logged once per sweep as its own run."""
from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN; null means "not measured"
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=2, sort_keys=False))
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(_clean(r), ensure_ascii=False) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


EPOCH = "epoch"  # the x-axis of the evaluation charts: 0 = the base model, then every evaluated epoch
CHART_KEYS = ("math/accuracy", "math/ref_nll", "safety/rate", "safety/refusal_nll", "safety/unsafe_compliance",
              "safety/class/refusal", "safety/class/compliance", "safety/class/degenerate", "over_refusal/rate",
              "asr/mean")
# W&B table columns per evaluation set (fields of <set>_generations.jsonl); safe = the judge's verdict
GEN_COLUMNS = {"math": ["split", "question", "response", "extracted", "reference", "correct", "ref_nll"],
               "sst2": ["split", "sentence", "response", "extracted", "reference", "correct", "ref_nll"],
               "code": ["split", "task_id", "response", "completion", "correct", "result", "ref_nll"],
               "jsonl": ["split", "prompt", "response", "reference", "correct", "ref_nll"],
               "safety": ["split", "hazard", "prompt", "response", "safe", "class", "categories", "p_unsafe"],
               "harmful": ["set", "prompt", "response", "safe", "class", "categories", "p_unsafe"],
               "over_refusal": ["type", "prompt", "response", "refused", "class"]}


def enabled(cfg: DictConfig) -> bool:
    return cfg.logger.name == "wandb" and cfg.logger.mode != "disabled"


def project(cfg: DictConfig) -> str:
    """logger.project, else WANDB_PROJECT, else simulations (tiny/micro presets) apart from real runs."""
    return cfg.logger.get("project") or os.environ.get("WANDB_PROJECT") or (
        "forgetting-sim" if cfg.model.simulation else "forgetting")


def tags(params: dict, simulation: bool, *extra: str) -> list[str]:
    t = [f"{k}={params[k]}" for k in ("model", "judge", "method", "data") if params.get(k) is not None]
    if isinstance(params.get("poison_ratio"), (int, float)):
        t.append(f"poison={params['poison_ratio']:g}")
    return [x[:64] for x in t + ["simulation"] * bool(simulation) + list(extra)]  # W&B: 64 characters a tag


def task_keys(cfg: DictConfig) -> list[str]:
    """The task's charted metrics (its primary utility metric and reference NLL): math/* for gsm8k and arith."""
    t = cfg.get("task")
    if t is None or t.get("prefix", t.get("name")) == "math":
        return []
    prefix = t.get("prefix") or t.name
    return list(dict.fromkeys([t.primary, f"{prefix}/ref_nll"]))


def chart_keys(cfg: DictConfig) -> list[str]:
    return task_keys(cfg) + list(CHART_KEYS) + [f"asr/{name}" for name in cfg.eval.harmful_sets]


class WandbRun:
    """One W&B run per job (several jobs may share a process: each gets init + finish). reinit="create_new" opens
    a second run beside the job's own (the base run), leaving wandb.run (the Trainer's) alone."""

    def __init__(self, cfg: DictConfig, run_dir: Path, group: str, name: str, job_type: str = "finetune",
                 tags: list[str] = (), config: dict | None = None, reinit: str = "finish_previous"):
        self.run = None
        self.keys = chart_keys(cfg)
        if not enabled(cfg):
            return
        import wandb

        os.environ["WANDB_MODE"] = cfg.logger.mode
        self.run = wandb.init(project=project(cfg), entity=cfg.logger.entity, group=group, name=name,
                              dir=str(run_dir), mode=cfg.logger.mode, reinit=reinit, tags=list(tags),
                              config=OmegaConf.to_container(cfg, resolve=True) if config is None else config,
                              job_type=job_type)
        self.run.define_metric(EPOCH, hidden=True)
        for k in self.keys:  # named, not a glob: the Trainer's "*" -> train/global_step glob must not win
            self.run.define_metric(k, step_metric=EPOCH)

    @property
    def active(self) -> bool:
        return self.run is not None

    @property
    def info(self) -> dict | None:
        """Where the run went (metrics.json "wandb"; the report's summary run follows its project)."""
        r = self.run
        return None if r is None else {"project": r.project, "entity": r.entity or None, "group": r.group,
                                       "name": r.name, "id": r.id, "dir": str(Path(r.dir).parent)}

    def log(self, metrics: dict) -> None:
        """The run's summary: every number of its final evaluation."""
        if self.run is not None:
            self.run.summary.update(_clean({k: v for k, v in metrics.items() if isinstance(v, (int, float))}))

    def log_eval(self, metrics: dict, epoch: int, step: int | None = None) -> None:
        """One evaluation as a history row: its chart metrics at `epoch` (and the Trainer's global step)."""
        if self.run is not None:
            row = {**{k: metrics[k] for k in chart_keys_of(metrics, self.keys)}, EPOCH: epoch}
            self.run.log(_clean(row if step is None else {**row, "train/global_step": step}))

    def generations(self, records: dict[str, list[dict]]) -> None:
        """One table per evaluation set: generations/math, /safety, /harmful, /over_refusal."""
        for name, rows in records.items():
            self.table(f"generations/{name}", rows, GEN_COLUMNS.get(name) or (list(rows[0]) if rows else []))

    def table(self, key: str, rows: list[dict], columns: list[str]) -> None:
        if self.run is None or not rows:
            return
        import wandb

        cols = [c for c in columns if any(c in r for r in rows)]
        t = wandb.Table(columns=cols, allow_mixed_types=True,
                        data=[[json.dumps(r.get(c)) if isinstance(r.get(c), (list, dict)) else r.get(c) for c in cols]
                              for r in rows])
        self.run.log({key: t})

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None


def chart_keys_of(metrics: dict, keys=CHART_KEYS) -> list[str]:
    """The charted metrics: `keys` (CHART_KEYS and the task's) and asr/<set> (not its /n or /class parts)."""
    return [k for k in metrics if k in keys or k in CHART_KEYS or re.fullmatch(r"asr/[^/]+", k)]


def read_generations(d: Path) -> dict[str, list[dict]]:
    """Every <set>_generations.jsonl of a run or base dir: the task's (math, sst2, code, ...) and the safety sets'."""
    out = {}
    for f in sorted(Path(d).glob("*_generations.jsonl")):
        rows = f.read_text(encoding="utf-8").splitlines()
        out[f.name[:-len("_generations.jsonl")]] = [json.loads(x) for x in rows if x.strip()]
    return out


def log_base_once(cfg: DictConfig, sweep_dir: Path, group: str, base: dict, base_dir: Path) -> None:
    """The base model as its own run (job_type base: summary + one history row at epoch 0), once per sweep (home:
    the sweep dir) and base evaluation even with several workers: a marker in <home>/wandb/, under a file lock."""
    if not enabled(cfg):
        return
    from filelock import FileLock

    marker = Path(sweep_dir) / "wandb" / f"base-{Path(base_dir).name}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(marker) + ".lock"):
        if marker.exists():
            return
        task = cfg.get("task")
        params = {"model": cfg.model.name, "judge": cfg.judge.get("name", str(cfg.judge.get("_target_"))),
                  "method": "base", "data": task.name if task is not None else cfg.data.name}
        conf = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "judge", "data", "task", "eval")
                if cfg.get(k) is not None}
        conf.update(method={"name": "base"}, epochs=0, lr=None, base_dir=str(base_dir))
        wb = WandbRun(cfg, sweep_dir, group, f"base {cfg.model.name} {Path(base_dir).name[-6:]}", job_type="base",
                      tags=tags(params, cfg.model.simulation, "base"), config=conf, reinit="create_new")
        try:
            wb.log_eval(base, 0)
            wb.log(base)
            if cfg.logger.get("log_generations", True):
                wb.generations(read_generations(base_dir))
            write_json(marker, wb.info)
        finally:
            wb.finish()
