"""Reading a sweep directory: one dict per run's metrics.json, their labels, the base model's metrics."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from ..attempts import gone
from ..errors import ConfigError
from .stats import _finite

SIM_NOTE = "CPU simulation (tiny preset), not Llama results"
SKIP_DIRS = {".hydra", "wandb"}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def find_metrics_files(sweep_dir: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(sweep_dir):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        if "metrics.json" in files:
            found.append(Path(root) / "metrics.json")
    return found


def load_runs(sweep_dir: str | Path) -> list[dict]:
    """One dict per metrics.json: dir, label, status, reason, config_hash, simulation, params, metrics, timings."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep directory not found: {sweep_dir}")
    files = find_metrics_files(sweep_dir)
    if not files:
        raise ConfigError(f"no metrics.json under {sweep_dir} (skipping .hydra/ and wandb/)")
    runs = []
    for f in files:
        rel = str(f.parent.relative_to(sweep_dir)) or "."
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("top level is not an object")
        except (ValueError, OSError) as e:
            runs.append(dict(dir=rel, label=None, status="failed", reason=f"unreadable metrics.json: {e}",
                             config_hash=None, simulation=None, params={}, metrics={}, timings={}))
            continue
        if data.get("status") == "duplicate":  # the same configuration as another run dir: counted there
            continue
        metrics = {k: v for k, v in (data.get("metrics") or {}).items() if _finite(v)}
        status = data.get("status") or ("ok" if metrics else "failed")
        reason = data.get("reason")
        if status == "running" and gone(data):
            status, reason = "interrupted", f"process {data.get('pid')} gone during {data.get('stage') or 'the run'} (killed?)"
        if status == "ok" and not metrics:
            status, reason = "failed", reason or "status ok but no metrics"
        runs.append(dict(dir=rel, label=data.get("label"), status=str(status), reason=reason,
                         config_hash=data.get("config_hash"), simulation=data.get("simulation"),
                         params=_flatten(data.get("params") or {}), metrics=metrics, epochs=data.get("epochs") or [],
                         epochs_are_runs=bool(data.get("epochs_are_runs")),
                         timings={k: v for k, v in _flatten(data.get("timings") or {}).items() if _finite(v)}))
    runs = _one_per_config(runs)
    runs = [v for r in runs for v in epoch_points(r)]
    _fill_labels(runs)
    runs.sort(key=_run_sort_key)
    return runs


def _one_per_config(runs: list[dict]) -> list[dict]:
    """A configuration (config hash) finished twice, e.g. in two sweeps merged into one folder, counts
    once: the first by folder name. Never two "seeds" with zero spread."""
    seen, out = set(), []
    for r in sorted(runs, key=lambda r: r["dir"]):
        h = r.get("config_hash")
        if r["status"] == "ok" and h:
            if h in seen:
                continue
            seen.add(h)
        out.append(r)
    return out


def math_task(runs: list[dict]) -> str:
    """The math data the runs were trained and evaluated on, for axis labels (GSM8K when unrecorded)."""
    names = sorted({str(r["params"].get("data") or "gsm8k") for r in runs if utility_of(r).startswith("math/")})
    return " / ".join("GSM8K" if n == "gsm8k" else n for n in names) or "GSM8K"


OLD_UTILITY = "math/accuracy"  # run dirs from before tasks: math, the only task then


def task_of(r: dict) -> str:
    """The task a run trained and evaluated on (params `task`; old run dirs: their `data`, gsm8k or arith)."""
    return str(r["params"].get("task") or r["params"].get("data") or "gsm8k")


def utility_of(r: dict) -> str:
    """The run's utility metric (params `utility_metric`: math/accuracy, sst2/accuracy, code/pass@1, ...)."""
    return str(r["params"].get("utility_metric") or OLD_UTILITY)


def utility_metric(runs: list[dict]) -> str:
    """The utility metric of these runs: the one most of them recorded (math/accuracy for old run dirs)."""
    counts: dict[str, int] = {}
    for r in runs:
        if r["params"].get("method") != "base" or len(runs) == 1:
            counts[utility_of(r)] = counts.get(utility_of(r), 0) + 1
    return max(counts, key=counts.get) if counts else OLD_UTILITY


def nll_metric(utility: str) -> str:
    """The reference-answer NLL beside a utility metric: math/accuracy -> math/ref_nll."""
    return f"{utility.split('/')[0]}/ref_nll"


def by_task(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by task, in order of appearance (one group for a one-task sweep and for old run dirs)."""
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(task_of(r), []).append(r)
    return out


def epoch_points(r: dict) -> list[dict]:
    """A run evaluated after every epoch under a constant lr (metrics.json `epochs_are_runs`) stands for one
    k-epoch run per epoch (tested equal): one point each, the last being the run itself."""
    if r["status"] != "ok" or not r.get("epochs_are_runs") or len(r["epochs"]) < 2:
        return [r]
    base = {k: v for k, v in r["metrics"].items() if k.startswith("base/")}
    out = []
    for e in r["epochs"][:-1]:
        k = e["epoch"]
        out.append(dict(r, epochs=[], dir=f"{r['dir']}#epoch{k}", config_hash=f"{r['config_hash']}#epoch{k}",
                        label=re.sub(r"epochs=\d+", f"epochs={k}", r["label"] or ""),
                        params={**r["params"], "epochs": k},
                        metrics={**base, **{m: v for m, v in e.items() if m not in ("epoch", "step") and _finite(v)}}))
    return out + [r]


def _fill_labels(runs: list[dict]) -> None:
    varying = _varying_params(runs, exclude=())
    for r in runs:
        if not r["label"]:
            r["label"] = " ".join(f"{k}={_fmt(r['params'][k])}" for k in varying if k in r["params"]) or r["dir"]
    # runs that share a label get what tells them apart (a method's hyperparameter, else the seed)
    same: dict[str, list[dict]] = {}
    for r in runs:
        same.setdefault(r["label"], []).append(r)
    for r in runs:
        group = same[r["label"]]
        apart = [k for k in _varying_params(group) if k.startswith("method_hparams.")] if len(group) > 1 else []
        extra = " ".join(f"{k.split('.', 1)[1]}={_fmt(r['params'].get(k))}" for k in apart)
        seed = r["params"].get("seed")
        if len(group) > 1 and not apart and seed is not None and f"seed={seed}" not in r["label"]:
            extra = f"seed={seed}"
        r["display"] = f"{r['label']} {extra}".strip()


def _varying_params(runs: list[dict], exclude: Iterable[str] = ("seed",)) -> list[str]:
    keys = _ordered_union(r["params"] for r in runs)
    return [k for k in keys if k not in exclude and len({json.dumps(r["params"].get(k), default=str) for r in runs}) > 1]


def _ordered_union(dicts: Iterable[dict]) -> list[str]:
    out: dict[str, None] = {}
    for d in dicts:
        for k in d:
            out.setdefault(k, None)
    return list(out)


def _run_sort_key(r: dict):
    def norm(v):
        return (0, v, "") if _finite(v) else (1, 0, str(v))
    return [norm(v) for v in r["params"].values()] + [(2, 0, r["dir"])]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def base_metrics(runs: list[dict]) -> dict:
    """The base model's metrics, un-prefixed (math/accuracy, ...), from the first ok run that has them."""
    bases = [{k[5:]: v for k, v in r["metrics"].items() if k.startswith("base/")} for r in runs if r["status"] == "ok"]
    bases = [b for b in bases if b]
    if not bases:
        return {}
    first = bases[0]
    for b in bases[1:]:
        diff = [k for k in first if k in b and abs(first[k] - b[k]) > 1e-9]
        if diff:
            print(f"warning: base-model values differ between runs ({', '.join(diff[:3])}); using the first run's",
                  file=sys.stderr)
            break
    return first


def _derived(r: dict, base: dict) -> dict:
    """safety_drop / accuracy_gain when the run did not write them."""
    m, out = r["metrics"], {}
    if "safety_drop" not in m and _finite(m.get("safety/rate")) and _finite(base.get("safety/rate")):
        out["safety_drop"] = base["safety/rate"] - m["safety/rate"]
    if "accuracy_gain" not in m and _finite(m.get("math/accuracy")) and _finite(base.get("math/accuracy")):
        out["accuracy_gain"] = m["math/accuracy"] - base["math/accuracy"]
    return out


def _is_sim(runs: list[dict]) -> bool:
    return any(r.get("simulation") for r in runs)


def _counts_only(runs: list[dict]) -> dict:
    """The evaluation-set sizes (…/n…) of the first ok run: the base model was evaluated on the same sets."""
    for r in runs:
        if r["status"] == "ok":
            return {k: v for k, v in r["metrics"].items() if re.search(r"/n(_|/|$)", k) and not k.startswith("base/")}
    return {}


def group_by_config(runs: list[dict]) -> list[dict]:
    """Runs whose params are equal except for `seed`: [{label, params, ok: [runs], failed: [runs]}]."""
    groups: dict[str, dict] = {}
    for r in runs:
        p = {k: v for k, v in r["params"].items() if k != "seed"}
        key = json.dumps(p, sort_keys=True, default=str) if r["params"] else f"dir:{r['dir']}"
        g = groups.setdefault(key, dict(params=p, ok=[], failed=[]))
        g["ok" if r["status"] == "ok" else "failed"].append(r)
    for g in groups.values():
        first = (g["ok"] or g["failed"])[0]
        g["label"] = _without_seed(first["label"])
    return list(groups.values())


def _without_seed(label: str) -> str:
    """The label with its seed=... part removed (the label itself if nothing else is left)."""
    return re.sub(r"\s*\bseed=\S+", "", label).strip() or label
