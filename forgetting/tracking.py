"""Run-dir files (the unit of truth) and the W&B mirror (offline by default)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


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


class WandbRun:
    """One W&B run per job (several jobs may share a process: each gets init + finish)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, group: str, name: str, job_type: str = "finetune"):
        self.run = None
        if cfg.logger.name != "wandb" or cfg.logger.mode == "disabled":
            return
        import wandb

        os.environ["WANDB_MODE"] = cfg.logger.mode
        self.run = wandb.init(project=cfg.logger.project, entity=cfg.logger.entity, group=group, name=name,
                              dir=str(run_dir), mode=cfg.logger.mode, reinit="finish_previous",
                              config=OmegaConf.to_container(cfg, resolve=True), job_type=job_type)

    @property
    def active(self) -> bool:
        return self.run is not None

    def log(self, metrics: dict) -> None:
        if self.run is not None:
            self.run.summary.update(_clean({k: v for k, v in metrics.items() if isinstance(v, (int, float))}))

    def log_epoch(self, row: dict) -> None:
        """One point of a forgetting curve (eval.every_epoch), as a W&B step."""
        if self.run is not None:
            self.run.log(_clean({f"epoch_eval/{k}": v for k, v in row.items()}))

    def table(self, key: str, rows: list[dict], columns: list[str]) -> None:
        if self.run is None or not rows:
            return
        import wandb

        t = wandb.Table(columns=columns, data=[[json.dumps(r.get(c)) if isinstance(r.get(c), (list, dict))
                                                 else r.get(c) for c in columns] for r in rows])
        self.run.log({key: t})

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None
