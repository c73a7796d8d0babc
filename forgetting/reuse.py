"""Reusing an identical training. Methods that act only after training (merge, safelora, magmax: `post_hoc`)
train exactly as plain SFT does, so once a sweep has trained one (model, LoRA, optimizer, rows, seed),
every other such run loads that adapter and applies its own step: `make methods` trains SFT once per
data setting instead of four times. Keyed by the training rows and every setting that shapes training,
plus the training code itself; stored under cache_dir/adapters/<key>/. `train_cache=false` turns it off."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config import base_model_ident

log = logging.getLogger(__name__)
_CODE = [Path(__file__).parent / "train.py", Path(__file__).parent / "methods" / "trainer.py",
         Path(__file__).parent / "sampling.py", Path(__file__).parent / "chat.py"]


def eligible(cfg: DictConfig, method) -> bool:
    from .methods.sft import SFT

    sel = lambda key, default: OmegaConf.select(cfg, key, default=default)  # noqa: E731 (partial test configs)
    return (bool(sel("train_cache", True)) and bool(sel("lora.enabled", False)) and not sel("eval.every_epoch", False)
            and bool(sel("cache_dir", None)) and (type(method) is SFT or getattr(method, "post_hoc", False)))


def key(cfg: DictConfig, rows: list[dict]) -> str:
    c = lambda node: OmegaConf.to_container(node, resolve=True)  # noqa: E731
    ident = {"model": base_model_ident(cfg.model), "lora": c(cfg.lora), "optimizer": c(cfg.optimizer), "lr": cfg.lr,
             "epochs": cfg.epochs, "seed": cfg.seed, "date": cfg.get("date_string"),
             "system": cfg.eval.system_prompt, "rows": rows,
             "code": [hashlib.sha256(p.read_bytes()).hexdigest() for p in _CODE]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def path(cfg: DictConfig, rows: list[dict]) -> Path:
    return Path(cfg.cache_dir) / "adapters" / key(cfg, rows)


def load(model, cfg: DictConfig, rows: list[dict]):
    """(PEFT model with the cached adapter, its training log) or None."""
    d = path(cfg, rows)
    if not (d / "history.json").is_file():
        return None
    from peft import PeftModel

    try:
        history = json.loads((d / "history.json").read_text())
        trained = PeftModel.from_pretrained(model, str(d), is_trainable=False)
    except (OSError, ValueError) as e:
        log.warning("cached training %s unreadable (%s): training again", d, e)
        return None
    log.info("identical training found in %s: adapter loaded, no training", d)
    return trained, history


def save(trained, history: list[dict], cfg: DictConfig, rows: list[dict]) -> None:
    d = path(cfg, rows)
    if (d / "history.json").is_file():
        return
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.", dir=d.parent))
    try:
        trained.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "history.json").write_text(json.dumps(history))
        os.rename(tmp, d)
    except OSError:  # another worker saved it first, or the disk is full: the run itself is unaffected
        shutil.rmtree(tmp, ignore_errors=True)
