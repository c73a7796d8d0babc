"""The untouched base model's scores: computed once per (model, eval sets, judge) and cached, so
every run of a sweep reports its change from the same base.

Safe on a shared filesystem without working locks: an entry is written in a private dir and published by
one atomic rename; a job that loses the race (another host published first) uses the published entry, so
an entry's files always come from one writer. The file lock only saves a second computation where locks
work (one host; most NFS)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Callable

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from .caches import move_aside
from .config import DATE_STRING, base_model_ident
from .tracking import read_json, write_json, write_jsonl

log = logging.getLogger(__name__)


def key(cfg: DictConfig, model_path: str) -> str:
    ident = {"model": base_model_ident(cfg.model), "path": model_path,
             "eval": {k: v for k, v in OmegaConf.to_container(cfg.eval, resolve=True).items() if k != "every_epoch"},
             "judge": OmegaConf.to_container(cfg.judge, resolve=True),
             "data": {k: cfg.data[k] for k in ("source", "test_path", "prompt_template", "strip_calculator")},
             "metrics_version": 4}  # 2: safety/refusal_nll and the ASR sets; 3: outputs/degenerate; 4: first answer line
    # added later: counted only when non-default, so existing caches keep their keys
    task = cfg.get("task")
    if task is not None and task.get("prefix") != "math":  # gsm8k / arith: the data keys above say which
        ident["task"] = OmegaConf.to_container(task, resolve=True)
    elif cfg.data.source == "arith":
        ident["arith"] = [cfg.data.arith_n_test, cfg.data.arith_seed, cfg.data.arith_max]
    if cfg.get("date_string", DATE_STRING) != DATE_STRING:
        ident["date_string"] = cfg.date_string
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def get(cfg: DictConfig, model_path: str, compute: Callable[[], tuple[dict, dict, dict]]) -> tuple[dict, Path]:
    """→ (base metrics, dir). `compute` returns (metrics, records, timings) of the base model."""
    root = Path(cfg.cache_dir) / "baselines"
    d = root / f"{cfg.model.name}-{key(cfg, model_path)}"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{d.name}.lock")):
        if d.exists():
            try:
                return _read(d), d
            except (ValueError, KeyError, TypeError, OSError) as e:
                try:
                    move_aside(d, f"{type(e).__name__}: {e}".splitlines()[0][:120])
                except FileNotFoundError:  # another job moved it first
                    pass
        log.info("evaluating the base model (once per model, eval sets and judge): %s", d)
        metrics, records, timings = compute()
        tmp = root / f".{d.name}.{socket.gethostname()}-{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, rows in records.items():
            write_jsonl(tmp / f"{name}_generations.jsonl", rows)
        OmegaConf.save(cfg, tmp / "config.yaml", resolve=True)
        write_json(tmp / "metrics.json", {"metrics": metrics, "timings": timings, "model_path": model_path})
        try:
            os.rename(tmp, d)  # atomic: readers see every file of one writer, or no entry
        except OSError:  # published by another job meanwhile: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return _read(d), d
        return metrics, d


def _read(d: Path) -> dict:
    metrics = read_json(d / "metrics.json")["metrics"]
    safety_responses(d)  # the refusal NLL's references must be readable too
    return metrics


def safety_responses(base_dir: Path) -> list[str]:
    """The base model's safety generations, in evaluation order (the refusal NLL's references)."""
    lines = (Path(base_dir) / "safety_generations.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x)["response"] for x in lines if x.strip()]
