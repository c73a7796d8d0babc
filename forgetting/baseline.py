"""The untouched base model's scores: computed once per (model, eval sets, judge) and cached, so
every run of a sweep reports its change from the same base."""
from __future__ import annotations

import hashlib
import json
import logging
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
    if cfg.data.source == "arith":
        ident["arith"] = [cfg.data.arith_n_test, cfg.data.arith_seed, cfg.data.arith_max]
    if cfg.get("date_string", DATE_STRING) != DATE_STRING:
        ident["date_string"] = cfg.date_string
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def get(cfg: DictConfig, model_path: str, compute: Callable[[], tuple[dict, dict, dict]]) -> tuple[dict, Path]:
    """→ (base metrics, dir). `compute` returns (metrics, records, timings) of the base model."""
    d = Path(cfg.cache_dir) / "baselines" / f"{cfg.model.name}-{key(cfg, model_path)}"
    d.mkdir(parents=True, exist_ok=True)
    with FileLock(str(d / ".lock")):
        if (d / "metrics.json").exists():
            try:
                cached = read_json(d / "metrics.json")["metrics"]
                safety_responses(d)  # the refusal NLL's references must be readable too
                return cached, d
            except (ValueError, KeyError, TypeError, OSError) as e:
                move_aside(d / "metrics.json", f"{type(e).__name__}: {e}".splitlines()[0][:120])
        log.info("evaluating the base model (once per model, eval sets and judge): %s", d)
        metrics, records, timings = compute()
        for name, rows in records.items():
            write_jsonl(d / f"{name}_generations.jsonl", rows)
        OmegaConf.save(cfg, d / "config.yaml", resolve=True)
        write_json(d / "metrics.json", {"metrics": metrics, "timings": timings, "model_path": model_path})
        return metrics, d


def safety_responses(base_dir: Path) -> list[str]:
    """The base model's safety generations, in evaluation order (the refusal NLL's references)."""
    lines = (Path(base_dir) / "safety_generations.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x)["response"] for x in lines if x.strip()]
