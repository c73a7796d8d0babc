"""The sweep-summary W&B run (job_type summary): a table of every run, native scatter plots (safety against
accuracy, ref NLL and ASR), the Pareto front, the report's CSVs (tables/) and figures (report/). Works offline."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .runs import SIM_NOTE, _ordered_union, find_metrics_files

PARAMS = ("method", "poison_ratio", "lr", "epochs", "seed", "data", "task", "model", "judge")
UTILITY_SUFFIXES = ("/accuracy", "/pass@1", "/exact_match", "/contains", "/ref_nll")  # any task's metrics
KEYS = ("safety/rate", "math/accuracy", "math/ref_nll", "asr/mean", "over_refusal/rate", "safety/refusal_nll",
        "safety/unsafe_compliance", "safety_drop")
SCATTERS = (("math/accuracy", "safety_vs_accuracy", "Safety vs math accuracy"),
            ("math/ref_nll", "safety_vs_ref_nll", "Safety vs math reference NLL"),
            ("asr/mean", "safety_vs_asr", "Safety vs attack success rate (mean over sets)"))


def col(metric: str) -> str:
    """A metric's column name in the W&B tables: no slash (Vega field names)."""
    return metric.replace("/", "_")


def _num(v):
    if isinstance(v, bool) or v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _typed_columns(rows: list[dict]) -> tuple[list[str], list[list]]:
    """Rows (from report or read back from CSV) -> W&B table columns with one type each (float or str)."""
    cols = _ordered_union(rows)
    numeric = {c: all(r.get(c) in (None, "") or _num(r.get(c)) is not None for r in rows) for c in cols}
    flags = {c: all(isinstance(r.get(c), bool) for r in rows) for c in cols}
    data = [[r.get(c) if flags[c] else None if r.get(c) in (None, "") else _num(r.get(c)) if numeric[c]
             else str(r.get(c)) for c in cols] for r in rows]
    return cols, data


def runs_rows(rows: list[dict], pareto: list[dict] | None = None) -> list[dict]:
    """tradeoff.csv rows (base first) -> one row per run: label, status, params, key metrics, on the front."""
    front = {p.get("run_dir") for p in pareto or [] if str(p.get("on_front")) == "True"}
    out = []
    for r in rows:
        row: dict[str, Any] = {"run": r.get("label"), "status": r.get("status"), "on_front": r.get("run_dir") in front}
        row.update({p: r.get(p) for p in PARAMS}, **({"method": "base"} if r.get("status") == "base" else {}))
        own = [k for k in r if k.endswith(UTILITY_SUFFIXES) and "/" in k and not k.startswith(("base/", "safety"))]
        row.update({col(k): _num(r.get(k)) for k in dict.fromkeys([*KEYS, *own])})
        row["run_dir"] = r.get("run_dir")
        out.append(row)
    return out


def recorded(sweep_dir: Path) -> dict:
    """The W&B project and entity the sweep's runs logged to (metrics.json "wandb"), if any."""
    for f in find_metrics_files(Path(sweep_dir)):
        try:
            w = json.loads(f.read_text(encoding="utf-8")).get("wandb")
        except (ValueError, OSError, AttributeError):
            continue
        if w and w.get("project"):
            return {"project": w["project"], "entity": w.get("entity")}
    return {}


def _table(wandb, rows: list[dict]):
    cols, data = _typed_columns(rows)
    return wandb.Table(columns=cols, data=data, allow_mixed_types=True)


def log_to_wandb(paths: dict[str, Path], rows: list[dict], project: str | None = None, group: str | None = None,
                 pareto: list[dict] | None = None, x: str = "math/accuracy", y: str = "safety/rate",
                 **init_kwargs) -> str:
    """Log the sweep-summary run; returns its local dir. project None: forgetting-sim for simulations."""
    import wandb

    sim = any(str(r.get("simulation")) == "True" or r.get("note") for r in rows)
    project = project or ("forgetting-sim" if sim else "forgetting")
    init_kwargs.setdefault("name", f"summary {group}" if group else "summary")
    init_kwargs.setdefault("tags", ["summary"] + ["simulation"] * sim)
    table = runs_rows(rows, pareto)
    points = [r for r in table if r["status"] in ("ok", "base")]
    scatters = list(SCATTERS)
    if not x.startswith("math/"):  # another task's utility metric and its reference NLL in place of math's
        nll = f"{x.split('/')[0]}/ref_nll"
        scatters = [(x, "safety_vs_accuracy", f"Safety vs {x}"), (nll, "safety_vs_ref_nll", f"Safety vs {nll}"),
                    SCATTERS[2]]
    with wandb.init(project=project, group=group, job_type="summary", **init_kwargs) as run:
        payload: dict[str, Any] = {"sweep/runs": _table(wandb, table), "tables/tradeoff": _table(wandb, rows)}
        pts = _table(wandb, points)
        for metric, key, title in scatters:
            if any(r.get(col(metric)) is not None for r in points):
                payload[f"plots/{key}"] = wandb.plot.scatter(pts, col(metric), "safety_rate", title=title)
        front = sorted(({"run": p.get("label"), col(x): _num(p.get(x)), col(y): _num(p.get(y))} for p in pareto or []
                        if str(p.get("on_front")) == "True"), key=lambda p: p[col(x)] or 0.0)
        if front:
            payload["sweep/pareto_front"] = _table(wandb, front)
            payload["plots/pareto_front"] = wandb.plot.line(_table(wandb, front), col(x), col(y),
                                                            title=f"Pareto front ({x}, {y})")
        for name, p in paths.items():
            p = Path(p)
            if p.suffix == ".png" and p.exists():
                payload[f"report/{p.stem}"] = wandb.Image(str(p), caption=p.stem)
            elif p.suffix == ".csv" and p.exists() and p.name != "tradeoff.csv":
                with open(p, newline="", encoding="utf-8") as f:
                    payload[f"tables/{p.stem}"] = _table(wandb, list(csv.DictReader(f)))  # pareto.csv beside pareto.png
        run.log(payload)
        run.summary.update({"runs/n": sum(r["status"] != "base" for r in table),
                            "runs/ok": sum(r["status"] == "ok" for r in table), "runs/on_front": len(front)})
        if sim:
            run.summary["note"] = SIM_NOTE
        run_dir = str(Path(run.dir).parent)
    return run_dir
