"""The CSV tables: tradeoff.csv, tradeoff_by_config.csv, pareto.csv."""
from __future__ import annotations

import csv
import math
from pathlib import Path

from .runs import SIM_NOTE, _counts_only, _derived, _fmt, _is_sim, _ordered_union, base_metrics
from .stats import _finite, _mean_std, is_rate, pareto_mask, rate_interval


def tradeoff_rows(runs: list[dict]) -> tuple[list[str], list[dict]]:
    """Columns and rows of tradeoff.csv (the base model first, then every run)."""
    base = base_metrics(runs)
    sim = _is_sim(runs)
    for r in runs:
        r["metrics"].update(_derived(r, base))
    param_cols = _ordered_union(r["params"] for r in runs)
    metric_keys = _ordered_union([base] + [r["metrics"] for r in runs])
    metric_keys = [k for k in metric_keys if k not in param_cols]
    timing_cols = [f"timings/{k}" for k in _ordered_union(r["timings"] for r in runs)]
    metric_cols = []
    for k in metric_keys:
        metric_cols.append(k)
        if is_rate(k):
            metric_cols += [f"{k}_lo", f"{k}_hi"]
    columns = ["note", "label", "status", "reason", "run_dir", "config_hash", "simulation"] + param_cols + metric_cols + timing_cols

    def metric_values(m: dict, fallback: dict | None = None) -> dict:
        out = {}
        for k in metric_keys:
            if k in m:
                out[k] = m[k]
                if is_rate(k):
                    out[f"{k}_lo"], out[f"{k}_hi"] = rate_interval(k, m, fallback)
        return out

    rows = []
    if base:
        bm = dict(base)
        bm.update({f"base/{k}": v for k, v in base.items()})
        rows.append(dict(note=SIM_NOTE if sim else "", label="base", status="base", reason="untouched base model",
                         run_dir="", simulation=sim, **metric_values(bm, _counts_only(runs))))
    for r in runs:
        row = dict(note=SIM_NOTE if r.get("simulation") else "", label=r["display"], status=r["status"],
                   reason=r["reason"], run_dir=r["dir"], config_hash=r["config_hash"], simulation=r["simulation"])
        row.update(r["params"])
        row.update(metric_values(r["metrics"]))
        row.update({f"timings/{k}": v for k, v in r["timings"].items()})
        rows.append(row)
    return columns, rows


def config_rows(runs: list[dict], groups: list[dict]) -> tuple[list[str], list[dict]]:
    param_cols = [k for k in _ordered_union(r["params"] for r in runs) if k != "seed"]
    keys = _ordered_union([r["metrics"] for r in runs if r["status"] == "ok"]
                          + [{f"timings/{k}": 0 for k in r["timings"]} for r in runs if r["status"] == "ok"])
    columns = ["note", "label", "n_seeds", "seeds", "n_failed"] + param_cols
    for k in keys:
        columns += [f"{k}_mean", f"{k}_std"]
    sim = _is_sim(runs)
    rows = []
    for g in groups:
        row = dict(note=SIM_NOTE if sim else "", label=g["label"], n_seeds=len(g["ok"]),
                   seeds=";".join(_fmt(r["params"].get("seed", "")) for r in g["ok"]), n_failed=len(g["failed"]))
        row.update(g["params"])
        for k in keys:
            vals = [_get(r, k) for r in g["ok"]]
            vals = [v for v in vals if _finite(v)]
            if vals:
                row[f"{k}_mean"], row[f"{k}_std"] = _mean_std(vals)
        rows.append(row)
    return columns, rows


def _get(r: dict, k: str):
    return r["timings"].get(k[8:]) if k.startswith("timings/") else r["metrics"].get(k)


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.6g}"
        return v
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({c: cell(row.get(c)) for c in columns})


def pareto_rows(runs: list[dict], x: str, y: str, dx: str, dy: str) -> tuple[list[str], list[dict], list[bool]]:
    base = base_metrics(runs)
    pts = [(r["metrics"].get(x), r["metrics"].get(y)) if r["status"] == "ok" else (None, None) for r in runs]
    mask = pareto_mask(pts, dx, dy)
    sim = _is_sim(runs)
    param_cols = _ordered_union(r["params"] for r in runs)
    cols = ["note", "label", "status", "on_front", "dominated_by_base", x]
    cols += [f"{x}_lo", f"{x}_hi"] if is_rate(x) else []
    cols += [y] + ([f"{y}_lo", f"{y}_hi"] if is_rate(y) else [])
    cols += ["x_direction", "y_direction", "reason", "run_dir"] + param_cols
    bx, by = base.get(x), base.get(y)
    rows = []
    for r, (vx, vy), f in zip(runs, pts, mask):
        row = dict(note=SIM_NOTE if r.get("simulation") else "", label=r["display"], status=r["status"], on_front=f,
                   x_direction=dx, y_direction=dy, reason=r["reason"], run_dir=r["dir"], **r["params"])
        row[x], row[y] = vx, vy
        for k in (x, y):
            if is_rate(k) and r["status"] == "ok":
                row[f"{k}_lo"], row[f"{k}_hi"] = rate_interval(k, r["metrics"])
        if all(_finite(v) for v in (vx, vy, bx, by)):
            row["dominated_by_base"] = not pareto_mask([(vx, vy), (bx, by)], dx, dy)[0]
        rows.append(row)
    rows.sort(key=lambda rw: (not rw["on_front"], rw["status"] != "ok",
                              -(rw[x] if _finite(rw[x]) else -math.inf) * (1 if dx == "max" else -1)))
    if _finite(bx) and _finite(by):
        brow = dict(note=SIM_NOTE if sim else "", label="base", status="base", on_front="", x_direction=dx,
                    y_direction=dy, reason="untouched base model (reference, not a candidate)")
        brow[x], brow[y] = bx, by
        bm, counts = {f"base/{k}": v for k, v in base.items()}, _counts_only(runs)
        for k in (x, y):
            if is_rate(k):
                brow[f"{k}_lo"], brow[f"{k}_hi"] = rate_interval(f"base/{k}", bm, counts)
        rows.append(brow)
    return cols, rows, mask
