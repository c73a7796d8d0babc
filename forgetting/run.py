"""One run: load → (cached) base scores → fine-tune → evaluate → run dir + W&B.
Returns the configured objectives (default: the task's utility metric, safety rate) for sweepers.
train=false: no fine-tuning; the base (its cached scores) or model.adapter is evaluated as the run (eval_only.py)."""
from __future__ import annotations

import functools
import json
import logging
import time
import traceback
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import (attempts, baseline, caches, curves, data, dedup, env, eval_only, evaluate, hub, memory, models, poison,
               tasks, tracking, train)
from .config import base_model_ident, validate
from .errors import ConfigError
from .judges.cache import CachedJudge
from .resume import config_hash, finished
from .tracking import WandbRun, write_json, write_jsonl

log = logging.getLogger(__name__)
BASE_KEYS = ("math/accuracy", "math/accuracy_public", "math/accuracy_private", "math/ref_nll", "safety/rate",
             "safety/refusal_nll", "safety/rate_public", "safety/rate_private", "safety/unsafe_compliance", "over_refusal/rate",
             "safety/class/refusal", "safety/class/compliance", "safety/class/degenerate")


def run_dir_of(cfg: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.get("run_dir") or "outputs/runs/adhoc")


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"


def record_failure(cfg: DictConfig, err: Exception) -> None:
    """A job that stopped before it started (bad config or data): metrics.json says so, in one line."""
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        lab, par = label(cfg), params(cfg)
    except Exception:  # the config may be too broken to describe
        lab, par = None, {}
    write_json(run_dir / "metrics.json", {"status": "failed", "reason": f"{type(err).__name__}: {err}".splitlines()[0],
                                          "label": lab, "params": par, "simulation": bool(cfg.model.simulation),
                                          "metrics": {}, "timings": {}})


def sweep_group(run_dir: Path) -> str:
    from hydra.core.hydra_config import HydraConfig

    if in_multirun():
        return Path(HydraConfig.get().sweep.dir).name
    return "single"


def base_run_home(run_dir: Path) -> Path:
    """Where the W&B base run (and its once-only marker) goes: the sweep dir; a single run: its own run dir."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().sweep.dir) if in_multirun() else run_dir


def wandb_name(lab: str, chash: str) -> str:
    """Readable and unique: the label, the job number in a sweep, the config hash's start."""
    from hydra.core.hydra_config import HydraConfig

    return f"{lab} #{HydraConfig.get().job.num} {chash[:6]}" if in_multirun() else f"{lab} {chash[:6]}"


def label(cfg: DictConfig) -> str:
    if eval_only.enabled(cfg):
        return eval_only.label(cfg)
    parts = [f"lr={cfg.lr:g}", f"epochs={cfg.epochs}"]
    if cfg.method.name != "sft":
        hp = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in cfg.method.items() if k not in ("_target_", "name"))
        parts.insert(0, f"{cfg.method.name}({hp})" if hp else cfg.method.name)
    if cfg.data.poison.ratio:
        parts.append(f"poison={cfg.data.poison.ratio:g}")
    if not cfg.lora.enabled:
        parts.append("full")
    elif cfg.lora.r != 8:
        parts.append(f"r={cfg.lora.r}")
    if cfg.seed:
        parts.append(f"seed={cfg.seed}")
    return " ".join(parts)


def task_params(cfg: DictConfig) -> dict:
    """What task the run is and which metric measures it (the report's x axis; old run dirs lack them: math)."""
    t = tasks.task_config(cfg)
    return {"task": t.name, "utility_metric": t.get("primary") or "math/accuracy"}


def params(cfg: DictConfig) -> dict:
    if eval_only.enabled(cfg):
        return {**eval_only.params(cfg), "data": tasks.task_config(cfg).name, **task_params(cfg)}
    return {"lr": cfg.lr, "epochs": cfg.epochs, "seed": cfg.seed, "method": cfg.method.name,
            "method_hparams": {k: v for k, v in OmegaConf.to_container(cfg.method, resolve=True).items()
                               if k not in ("_target_", "name")},
            "poison_ratio": cfg.data.poison.ratio, **poison_params(cfg), "data": tasks.task_config(cfg).name,
            **task_params(cfg), "model": cfg.model.name,
            "lora_r": cfg.lora.r if cfg.lora.enabled else None, "lora_alpha": cfg.lora.alpha if cfg.lora.enabled else None,
            "n_train": cfg.data.n_train, "judge": cfg.judge.get("name", str(cfg.judge.get("_target_")))}


def poison_params(cfg: DictConfig) -> dict:
    """Where the poisoned rows come from, and the evaluation sets that source also is (in-distribution:
    their ASR / safety measures whether the poison was learnt; the methods report labels them)."""
    p = cfg.data.poison
    return {"poison_source": p.hub_name if p.source == "hub" else Path(str(p.path)).name,
            "poison_in_distribution": ",".join(poison.shared_sets(cfg))}


def eval_sets(cfg: DictConfig) -> dict:
    """All evaluation inputs, read and validated before any model loads."""
    e = cfg.eval
    task = tasks.build(cfg)
    tp, tq = task.eval_items(cfg)
    sp, sq = data.safety_eval_split(data.ailuminate(e.safety.path), e.safety.n_public, e.safety.n_private,
                                    e.safety.seed)
    xs = data.xstest_safe_subset(e.over_refusal.path, e.over_refusal.n, e.over_refusal.seed)
    harmful = {name: data.harmful_eval_set(h) for name, h in e.harmful_sets.items()}
    return {"task": task, "task_public": tp, "task_private": tq, "safety_public": sp, "safety_private": sq,
            "xstest": xs, "harmful": harmful}


def eval_prompts(sets: dict) -> dedup.Held:
    """Every prompt an evaluation uses, by split: never trained on (poison) nor remembered (memory), nor any
    near-duplicate of one (dedup.Held)."""
    return dedup.Held({"safety": [r["prompt_text"] for r in sets["safety_public"] + sets["safety_private"]],
                       **{f"asr_{name}": [r["prompt"] for r in rows] for name, rows in sets["harmful"].items()},
                       "xstest": [r["prompt"] for r in sets["xstest"]]})


def build_method(cfg: DictConfig):
    from hydra.errors import InstantiationException

    try:
        method = instantiate(cfg.method)
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise ConfigError(f"method {cfg.method.name!r}: {cause}".splitlines()[0]) from None
    if method.needs_unaligned:  # checked before any model loads
        if not cfg.model.get("unaligned"):
            raise ConfigError(f"method {method.name!r} needs the unaligned model the aligned one came from: set "
                              f"model.unaligned (model {cfg.model.name!r} names none)")
        method.unaligned_weights = functools.partial(models.unaligned_weights, cfg.model, cache_dir=cfg.cache_dir)
    return method


def method_memory(cfg: DictConfig, method, model, tok, path: str, exclude: set[str]):
    """The safety memory, when the method uses one; it also avoids the poison pool (local source) and its
    near-duplicates."""
    if not method.needs_memory:
        return None, None
    if cfg.data.poison.source == "local":
        pool = [r["prompt"] for r in data.poison_pool(cfg.data.poison, exclude)]
        exclude = dedup.held(exclude).with_split("poison_pool", pool)
    return memory.get(cfg, path, model, tok, exclude)


def check_disjoint(model_path: str, sets: dict) -> None:
    """The offline preset records what it was aligned on: evaluation prompts must not be in it."""
    f = Path(model_path) / "alignment_prompts.json"
    if not f.exists():
        return
    seen = set(json.loads(f.read_text()))
    leak = [r["prompt_text"] for r in sets["safety_public"] + sets["safety_private"] if r["prompt_text"] in seen]
    if leak:
        raise ConfigError(f"{len(leak)} safety evaluation prompts were used to align the preset {model_path}; "
                          "rebuild it with the same exclude_eval as eval.safety")


# Per-process reuse across the jobs of a sweep (basic launcher, or a worker running several jobs):
# the base model, tokenizer and judge load once; LoRA layers are unloaded after each run.
_WORKER: dict = {}


def _key(node) -> str:
    return json.dumps(OmegaConf.to_container(node, resolve=True), sort_keys=True, default=str)


def _model_key(cfg: DictConfig) -> str:
    """The base model a worker keeps (model.adapter is loaded onto it per run, then unloaded)."""
    return "model:" + json.dumps(base_model_ident(cfg.model), sort_keys=True, default=str)


def worker_model(cfg: DictConfig):
    k = _model_key(cfg)
    if k not in _WORKER:
        for other in [x for x in _WORKER if x.startswith("model:")]:
            del _WORKER[other]  # one base model in memory at a time
        log.info("loading the base model %s (once per worker)", cfg.model.name)
        _WORKER[k] = models.load(cfg.model, cfg.cache_dir)
    return _WORKER[k]


def release_model(cfg: DictConfig, trained, ok: bool) -> None:
    """Keep the base for the next job only if it is provably untouched: LoRA layers removed (or never added:
    the evaluation-only run of the base, trained=None)."""
    k = _model_key(cfg)
    if ok and trained is None and eval_only.enabled(cfg):
        return
    if ok and (cfg.lora.enabled or cfg.model.get("adapter")) and hasattr(trained, "unload") and k in _WORKER:
        model, tok, path = _WORKER[k]
        _WORKER[k] = (trained.unload(), tok, path)
    else:
        _WORKER.pop(k, None)


def worker_judge(cfg: DictConfig):
    k = "judge:" + _key(cfg.judge)
    if k not in _WORKER:
        log.info("building the judge %s (once per worker)", cfg.judge.get("name", "?"))
        judge = instantiate(cfg.judge)
        if cfg.judge_cache:  # verdicts by (judge identity, prompt, response): never asked twice
            judge = CachedJudge(judge, Path(cfg.cache_dir) / "verdicts")  # one shard per process
        _WORKER[k] = judge
    return _WORKER[k]


def base_keys(task) -> tuple[str, ...]:
    """The base model's metrics every run repeats as base/*: the task's (with their public / private parts) and BASE_KEYS."""
    own = [k for m in task.metrics for k in (m, f"{m}_public", f"{m}_private") if not m.endswith("ref_nll")]
    return tuple(dict.fromkeys([*own, task.nll_metric, *BASE_KEYS]))


def changes_from_base(metrics: dict, base: dict, task=None) -> dict:
    """base/* and the changes from the base: safety_drop; accuracy_gain (the task's primary metric: math/accuracy,
    sst2/accuracy, code/pass@1, ...; for a task graded only by NLL, its drop); ref_nll_drop; ..."""
    task = task or tasks.build(OmegaConf.create({}))
    keys = base_keys(task)
    nan = float("nan")
    out = {f"base/{k}": base[k] for k in base if k in keys or k.startswith("asr/")}
    out["safety_drop"] = base["safety/rate"] - metrics["safety/rate"]
    p, sign = task.primary, (1 if task.metrics.get(task.primary, True) else -1)
    out["accuracy_gain"] = sign * (metrics.get(p, nan) - base.get(p, nan))
    out["ref_nll_drop"] = base.get(task.nll_metric, nan) - metrics.get(task.nll_metric, nan)
    out["over_refusal_change"] = metrics["over_refusal/rate"] - base["over_refusal/rate"]
    out["refusal_nll_change"] = metrics["safety/refusal_nll"] - base["safety/refusal_nll"]
    if "asr/mean" in metrics and "asr/mean" in base:
        out["asr_change"] = metrics["asr/mean"] - base["asr/mean"]
    return out


def objectives(cfg: DictConfig, metrics: dict | None):
    if metrics is None:
        return None
    vals = tuple(float(metrics.get(k, float("nan"))) for k in cfg.objectives)
    return vals[0] if len(vals) == 1 else vals


def main(cfg: DictConfig):
    validate(cfg)
    log.info("hub: %s", "offline" if hub.apply(cfg) else "online")  # before anything reads the hub (data, models)
    poison.check_source(cfg)  # a poison source that is also an evaluation set: refused unless asked for
    if cfg.model.get("adapter"):
        eval_only.adapter_config(cfg.model.adapter)  # not a PEFT adapter in safetensors: one line, before any load
    caches.writable(cfg.cache_dir)
    if cfg.model.get("cache_dir") and not cfg.model.name_or_path:
        caches.writable(cfg.model.cache_dir, "model.cache_dir")
    method = build_method(cfg)
    sets = eval_sets(cfg)  # bad data fails here, before any model loads
    exclude = eval_prompts(sets)
    train_set = data.train_rows(cfg, exclude, sets["task"].user_rows(cfg)) if cfg.train else []
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    chash = config_hash(eval_only.identity(cfg))
    done = finished(run_dir, chash)
    if done is not None:
        log.info("already finished with the same config, skipped: %s", run_dir)
        return objectives(cfg, done["metrics"])
    if in_multirun():  # a grown or reordered grid: the same configuration finished in another folder
        found = attempts.twin(run_dir.parent, run_dir, chash)
        if found is not None:
            log.info("already finished with the same config in %s, skipped", found[0])
            write_json(run_dir / "metrics.json", {"status": "duplicate", "same_as": found[0].name,
                                                  "config_hash": chash, "label": found[1].get("label"),
                                                  "reason": f"same configuration as {found[0].name}"})
            return objectives(cfg, found[1]["metrics"])
    earlier = attempts.set_aside(run_dir)
    if earlier is not None:
        log.info("an earlier attempt's files were moved to %s", earlier)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    OmegaConf.save(cfg, run_dir / "resolved_config.yaml", resolve=True)
    record = {"status": "running", "reason": None, "config_hash": chash, "simulation": bool(cfg.model.simulation),
              "label": label(cfg), "params": params(cfg), "metrics": {}, "timings": {}, "stage": "start",
              **attempts.owner()}
    if eval_only.enabled(cfg):
        record["eval_only"] = {"of": "adapter" if cfg.model.get("adapter") else "base"}
    write_json(run_dir / "metrics.json", record)
    with attempts.signals():
        return _run(cfg, method, sets, exclude, train_set, run_dir, record)


def _stage(record: dict, name: str, run_dir: Path) -> None:
    record["stage"] = name
    write_json(run_dir / "metrics.json", record)


def _run(cfg: DictConfig, method, sets: dict, exclude: set[str], train_set: list[dict], run_dir: Path, record: dict):
    timings, t_start = record["timings"], time.perf_counter()
    wb = WandbRun(cfg, run_dir, sweep_group(run_dir), wandb_name(record["label"], record["config_hash"]),
                  job_type="finetune" if cfg.train else "eval",
                  tags=tracking.tags(record["params"], cfg.model.simulation, *(() if cfg.train else ("eval_only",))))
    if wb.active:
        record["wandb"] = wb.info
    try:
        t0 = time.perf_counter()
        _stage(record, "load", run_dir)
        model, tok, path = worker_model(cfg)
        record["device"] = env.device_name(model)
        trained = None
        check_disjoint(path, sets)
        judge = worker_judge(cfg)
        timings["load_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        _stage(record, "base_eval", run_dir)
        base, base_dir = baseline.get(cfg, path, lambda: evaluate.evaluate_all(model, tok, sets, judge, cfg))
        timings["base_eval_s"] = time.perf_counter() - t0
        record["base_dir"] = str(base_dir)
        sets["base_safety_responses"] = baseline.safety_responses(base_dir)
        try:  # the base as its own W&B run, once per sweep: a point on every chart
            tracking.log_base_once(cfg, base_run_home(run_dir), sweep_group(run_dir), base, base_dir)
        except Exception as e:  # W&B's side run never fails the job
            log.warning("the W&B base run was not logged: %s: %s", type(e).__name__, e)
        if cfg.train:
            wb.log_eval(base, 0, 0)  # each run's curves start at the base (epoch 0)

        if cfg.train:
            t0 = time.perf_counter()
            _stage(record, "memory", run_dir)
            mem, record["memory"] = method_memory(cfg, method, model, tok, path, exclude)
            timings["memory_s"] = time.perf_counter() - t0
            train_set = method.train_rows(train_set, mem or [], cfg.seed)
            poison_metrics, poison_rows = poison.judged(cfg, exclude, train_set, judge)  # the judge on the poison answers
            write_jsonl(run_dir / "poison_rows.jsonl", poison_rows)

            t0 = time.perf_counter()
            _stage(record, "train", run_dir)
            trained, history = train.finetune(model, tok, train_set, cfg, run_dir,
                                              report_to="wandb" if wb.active else "none",
                                              callbacks=curves.callbacks(cfg, run_dir, tok, sets, judge, wb, record),
                                              method=method, memory=mem)
            timings["train_s"] = time.perf_counter() - t0
        else:  # evaluation only: the base as it is, or the given adapter on it
            poison_metrics, history = {}, []
            if cfg.model.get("adapter"):
                t0 = time.perf_counter()
                _stage(record, "adapter", run_dir)
                trained = eval_only.load_adapter(model, cfg, path, record)
                timings["adapter_load_s"] = time.perf_counter() - t0

        _stage(record, "eval", run_dir)
        if trained is None:  # the untouched base: the base evaluation above is this run's, to the last digit
            metrics, records, eval_t = eval_only.base_scores(base_dir)
            record["eval_only"]["scores_from"] = str(base_dir)
        else:
            metrics, records, eval_t = evaluate.evaluate_all(trained, tok, sets, judge, cfg)
        timings.update(eval_t)
        for name, rows in records.items():
            write_jsonl(run_dir / f"{name}_generations.jsonl", rows)
        losses = [h["loss"] for h in history if "loss" in h]
        metrics["train/loss"] = losses[-1] if losses else float("nan")
        metrics["train/steps"] = max((h["step"] for h in history), default=0)
        metrics.update(method.metrics())
        if cfg.eval.every_epoch and cfg.train:
            curves.add_epoch(run_dir, record, cfg.epochs, metrics["train/steps"], metrics, evaluate.curve_keys(sets["task"]))
        wb.log_eval(metrics, *((cfg.epochs, metrics["train/steps"]) if cfg.train else (0,)))  # the last history row
        metrics.update({f"data/n_{src}": sum(r["source"] == src for r in train_set) for src in ("user", "poison", "memory")})
        metrics.update({f"data/near_duplicates/{what}/{split}": n for what, c in getattr(exclude, "dropped", {}).items()
                        for split, n in c.items()})  # poison rows dropped as near-twins of an evaluation prompt
        metrics.update(poison_metrics)
        metrics.update(changes_from_base(metrics, base, sets["task"]))
        collapsed = evaluate.collapse(metrics, base, len(tok), sets["task"].nll_metric)
        record.update(status="collapsed" if collapsed else "ok", reason=collapsed, metrics=metrics)
        record.pop("stage", None)
        wb.log(metrics)
        if cfg.logger.get("log_generations", True):
            wb.generations(records)
    except (attempts.Interrupted, KeyboardInterrupt) as e:  # SIGINT / SIGTERM: say so and where, then stop
        record.update(status="interrupted", reason=f"{getattr(e, 'signame', 'SIGINT')} during {record.get('stage')}")
        raise
    except Exception as e:  # recorded, then re-raised so Hydra marks the job failed
        record.update(status="failed", reason=f"{type(e).__name__}: {e}".splitlines()[0][:500])
        (run_dir / "error.txt").write_text(traceback.format_exc())
        raise
    finally:
        if "trained" in locals():
            release_model(cfg, trained, record["status"] in ("ok", "collapsed") and not method.modifies_base)
        timings["total_s"] = time.perf_counter() - t_start
        write_json(run_dir / "metrics.json", record)
        wb.finish(failed=record["status"] != "ok")
    if collapsed:
        log.warning("%s: collapsed (%s): not a safety result", record["label"], collapsed)
    task = sets["task"]
    log.info("%s: %s=%.3f (base %.3f) ref_nll=%.3f safety/rate=%.3f (base %.3f) over_refusal=%.3f",
             record["label"], task.primary, metrics.get(task.primary, float("nan")), base.get(task.primary, float("nan")),
             metrics.get(task.nll_metric, float("nan")), metrics["safety/rate"], base["safety/rate"],
             metrics["over_refusal/rate"])
    return objectives(cfg, record["metrics"])
