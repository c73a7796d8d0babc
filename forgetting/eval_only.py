"""Evaluation-only runs (`train=false`): the base model, or an existing PEFT adapter (`model.adapter=DIR`: a
run's adapter/, or one trained elsewhere, e.g. with `trl sft`), evaluated as a run: the same metrics, run-dir
files and report point as a fine-tuned run, nothing trained.

- The base: its scores are the base evaluation cache's (baseline.py), so an eval-only run of the base equals,
  to the last digit, the base/* values every trained run of the same model, eval sets and judge records.
- An adapter: the base + PeftModel.from_pretrained(DIR) (adapter_model.safetensors only), evaluated as the
  fine-tuned model is, with the base's scores beside it (base/*, safety_drop, ...) as in a trained run.

What only shapes training (lr, epochs, seed, optimizer, LoRA, method, memory, training data, poison) is left
out of an eval-only run's config hash: a sweep over those with train=false runs its evaluation once, the
other jobs are recorded as duplicates of it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .tracking import read_json

log = logging.getLogger(__name__)

WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"
TRAINING_ONLY = ("lr", "epochs", "seed", "optimizer", "lora", "method", "memory", "train_cache")
TRAINING_DATA = ("n_train", "train_path", "poison", "arith_n_train")
GENERATIONS = ("safety", "harmful", "over_refusal")  # <name>_generations.jsonl beside the task's (math, sst2, code, ...)
BASE_LABEL = "base (no training)"


def enabled(cfg: DictConfig) -> bool:
    return not cfg.get("train", True)


def adapter_config(path: str) -> dict:
    """The adapter's adapter_config.json; a one-line ConfigError when `path` is no PEFT adapter saved as
    safetensors (checked before any model loads)."""
    d = Path(path)
    where = f"model.adapter={path}"
    if not d.is_dir():
        raise ConfigError(f"{where}: no such directory (give a PEFT adapter dir holding {CONFIG} and {WEIGHTS}, "
                          "e.g. a run's adapter/)")
    if not (d / CONFIG).is_file():
        raise ConfigError(f"{where}: no {CONFIG} there: not a PEFT adapter dir")
    if not (d / WEIGHTS).is_file():
        pickled = (d / "adapter_model.bin").is_file()
        raise ConfigError(f"{where}: no {WEIGHTS} there" + (" (only adapter_model.bin: pickled weights are not "
                                                             "loaded; save the adapter with safe_serialization=True)"
                                                             if pickled else ""))
    try:
        conf = json.loads((d / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: {CONFIG} unreadable: {str(e).splitlines()[0]}") from None
    if not isinstance(conf, dict) or "peft_type" not in conf:
        raise ConfigError(f"{where}: {CONFIG} names no peft_type: not a PEFT adapter config")
    return conf


def fingerprint(path: str) -> str:
    """sha256 of the adapter's config and weights: the same path holding another adapter is another run."""
    h = hashlib.sha256()
    for name in (CONFIG, WEIGHTS):
        with open(Path(path) / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def identity(cfg: DictConfig) -> dict:
    """The config as resume.config_hash should hash it. A trained run: the config without the two fields eval-only
    runs added (train, model.adapter), so runs from before them keep their hashes. An eval-only run: without what
    only shapes training, with the adapter's content hash."""
    c = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    if (c.get("task") or {}).get("prefix") == "math":  # gsm8k / arith: data.* says which, as before tasks existed
        c.pop("task", None)
    if not enabled(cfg):
        c.pop("train", None)
        if c.get("model", {}).get("adapter") is None:
            c.get("model", {}).pop("adapter", None)
        return c
    for k in TRAINING_ONLY:
        c.pop(k, None)
    for k in TRAINING_DATA:
        c["data"].pop(k, None)
    c["eval"].pop("every_epoch", None)
    if cfg.model.get("adapter"):
        c["model"]["adapter_sha256"] = fingerprint(cfg.model.adapter)
    return c


def short_name(path: str) -> str:
    """A run's adapter/ is named by its run dir (`0_lr=1e-4/adapter`); any other adapter dir by its own name."""
    p = Path(str(path).rstrip("/"))
    return f"{p.parent.name}/{p.name}" if p.name == "adapter" and p.parent.name else p.name


def label(cfg: DictConfig) -> str:
    return f"eval-only: {short_name(cfg.model.adapter)}" if cfg.model.get("adapter") else BASE_LABEL


def params(cfg: DictConfig) -> dict:
    """A trained run's params, with nothing that claims training: lr none, 0 epochs, 0 training rows; method
    `base` (the base itself) or the label, `eval-only: <adapter>` (with its LoRA rank and alpha when it has them)."""
    adapter, conf = cfg.model.get("adapter"), {}
    if adapter:
        try:
            conf = adapter_config(adapter)
        except ConfigError:  # a failed run's record still names what it was to evaluate
            pass
    out = {"lr": None, "epochs": 0, "seed": cfg.seed, "method": label(cfg) if adapter else "base", "method_hparams": {},
           "poison_ratio": None, "data": cfg.data.name, "model": cfg.model.name,
           "lora_r": conf.get("r"), "lora_alpha": conf.get("lora_alpha"), "n_train": 0,
           "judge": cfg.judge.get("name", str(cfg.judge.get("_target_")))}
    if adapter:
        out["adapter"] = str(adapter)
    return out


def _names(p: str) -> set[str]:
    """The ways a model may be named: as given, its resolved dir, and the hub id of a hub-cache snapshot dir."""
    out = {p.rstrip("/")}
    if Path(p).exists():
        out.add(str(Path(p).resolve()))
    m = re.search(r"models--([^/]+)--([^/]+)", p)
    if m:
        out.add(f"{m[1]}/{m[2]}")
    return out


def same_base(named: str | None, model_path: str) -> bool:
    return not named or bool(_names(str(named)) & _names(str(model_path)))


def load_adapter(model, cfg: DictConfig, model_path: str, record: dict):
    """The base with the adapter on it (PeftModel, not trainable). An adapter trained on another base model
    (adapter_config's base_model_name_or_path) is a one-line warning, also in metrics.json; one whose shapes do
    not fit is a one-line error."""
    from peft import PeftModel

    path = str(cfg.model.adapter)
    conf = adapter_config(path)
    named = conf.get("base_model_name_or_path")
    info = {"adapter": path, "adapter_sha256": fingerprint(path), "adapter_base": named, "peft_type": conf["peft_type"]}
    if not same_base(named, model_path):
        info["warning"] = (f"adapter {path} was trained on {named!r}, evaluated here on {model_path!r}: the numbers are "
                           "this model's with that adapter")
        log.warning(info["warning"])
    record["eval_only"].update(info)
    try:
        return PeftModel.from_pretrained(model, path, is_trainable=False)
    except (RuntimeError, ValueError, KeyError, OSError) as e:  # size mismatch, unknown modules, bad file
        raise ConfigError(f"model.adapter={path} does not fit model {model_path}: "
                          f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"[:500]) from None


def base_scores(base_dir: Path) -> tuple[dict, dict, dict]:
    """The base evaluation cache as evaluate.evaluate_all's (metrics, records, timings): the base, evaluated once."""
    metrics = dict(read_json(Path(base_dir) / "metrics.json")["metrics"])
    records = {}
    names = sorted({f.name[:-len("_generations.jsonl")] for f in Path(base_dir).glob("*_generations.jsonl")}
                   | set(GENERATIONS))
    for name in names:  # the task's records (math, sst2, ...) and the safety sets'
        f = Path(base_dir) / f"{name}_generations.jsonl"
        lines = f.read_text(encoding="utf-8").splitlines() if f.is_file() else []
        records[name] = [json.loads(x) for x in lines if x.strip()]
    return metrics, records, {}
