"""Forgetting curves inside one run (eval.every_epoch): evaluate after every epoch into the run's record,
epoch_metrics.jsonl and a W&B history row each."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from . import evaluate
from .tracking import write_json


def callbacks(cfg: DictConfig, run_dir: Path, tok, sets: dict, judge, wb, record: dict) -> list:
    """eval.every_epoch: evaluate the end of each epoch into the record (forgetting curves in one run)."""
    (run_dir / "epoch_metrics.jsonl").unlink(missing_ok=True)
    if not cfg.eval.every_epoch:
        return []
    o = cfg.optimizer  # epoch k equals a k-epoch run only when the lr does not depend on the run's length
    record["epochs_are_runs"] = o.lr_scheduler_type == "constant" and o.warmup_ratio == 0

    def at_epoch(model, epoch: int, step: int):
        metrics = evaluate.evaluate_all(model, tok, sets, judge, cfg)[0]
        add_epoch(run_dir, record, epoch, step, metrics, evaluate.curve_keys(sets["task"]))
        wb.log_eval(metrics, epoch, step)

    return [evaluate.EpochEval(at_epoch, cfg.epochs)]


def add_epoch(run_dir: Path, record: dict, epoch: int, step: int, metrics: dict,
              keys: tuple[str, ...] = evaluate.CURVE_KEYS) -> None:
    row = {"epoch": epoch, "step": step, **{k: metrics[k] for k in keys if k in metrics}}
    record.setdefault("epochs", []).append(row)
    with open(run_dir / "epoch_metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    write_json(run_dir / "metrics.json", record)  # a curve survives a later failure
