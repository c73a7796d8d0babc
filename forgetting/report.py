"""Turn a sweep directory (Hydra multirun output) into tables and pictures.

    report(sweep_dir, x="math/accuracy", y="safety/rate", out_dir=None) -> {file name: path}
    python -m forgetting.report <sweep_dir> [--x METRIC] [--y METRIC] [--minimize-x] [--wandb]

Writes, by default into <sweep_dir>/report/:
  tradeoff.csv            one row per run (ok and failed) plus one for the base model; every rate
                          column has <col>_lo / <col>_hi Wilson 95 % interval columns
  tradeoff_by_config.csv  runs that differ only in `seed` aggregated: mean, std, n seeds
  tradeoff.png            safety vs math accuracy and vs math reference NLL, base model as a star
  pareto.csv / .png       the non-dominated runs for the objectives (x, y)
  safety_classes.png      refusal / compliance / degenerate share of the safety generations per run

"Within noise of the base" is decided by a two-sided two-proportion z-test (pooled variance) of the
run's safety count against the base model's, at the 5 % level; for seed groups the counts of the
seeds are pooled.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import ConfigError

SIM_NOTE = "CPU simulation (tiny preset), not Llama results"
SKIP_DIRS = {".hydra", "wandb"}
ALPHA = 0.05  # significance level of the "differs from base" test
CLASS_COLOURS = {"refusal": "#2e8b57", "compliance": "#d62728", "degenerate": "#8c8c8c"}
EXTRA_CLASS_COLOURS = ["#1f77b4", "#ff7f0e", "#9467bd", "#e377c2", "#bcbd22", "#17becf"]


# ------------------------------------------------------------------ statistics
def wilson(k: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (hand-written: it is 5 lines, no statsmodels)."""
    if not n or n <= 0:
        return (math.nan, math.nan)
    p, z2 = k / n, z * z
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def two_proportion_p(k1: float, n1: float, k2: float, n2: float) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (normal approximation)."""
    if not n1 or not n2:
        return math.nan
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:  # both all-0 or both all-1: identical
        return 1.0
    z = (k1 / n1 - k2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


def direction(metric: str, override: str | None = None) -> str:
    """'max' or 'min'. Metrics ending in nll / loss (and *_drop, over_refusal/*) are minimised."""
    if override:
        if override not in ("max", "min"):
            raise ConfigError(f"direction must be 'max' or 'min', got {override!r}")
        return override
    m = metric.lower()
    if m.endswith(("nll", "loss", "_drop")) or m.startswith("over_refusal/"):
        return "min"
    return "max"


def pareto_mask(points: Sequence[tuple[float, float]], dx: str = "max", dy: str = "max") -> list[bool]:
    """True for each point no other point dominates (>= on both objectives, > on one).
    Points with a NaN / None coordinate are never on the front."""
    sx, sy = (1 if dx == "max" else -1), (1 if dy == "max" else -1)
    pts = [None if not (_finite(a) and _finite(b)) else (sx * a, sy * b) for a, b in points]
    mask = []
    for i, p in enumerate(pts):
        if p is None:
            mask.append(False)
            continue
        dominated = any(q is not None and j != i and q[0] >= p[0] and q[1] >= p[1] and (q[0] > p[0] or q[1] > p[1])
                        for j, q in enumerate(pts))
        mask.append(not dominated)
    return mask


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _mean_std(vals: Sequence[float]) -> tuple[float, float]:
    n = len(vals)
    if n == 0:
        return (math.nan, math.nan)
    m = sum(vals) / n
    if n < 2:
        return (m, math.nan)
    return (m, math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1)))  # sample std (ddof=1)


# ------------------------------------------------------------------ which columns are rates, and their n
def is_rate(key: str) -> bool:
    """math/accuracy*, <family>/rate*, <family>/class/<c> (also with a base/ prefix). Not accuracy_gain etc."""
    parts = (key[5:] if key.startswith("base/") else key).split("/")
    return len(parts) >= 2 and (parts[1].startswith(("accuracy", "rate")) or parts[1] == "class")


def count_key_candidates(key: str) -> list[str]:
    """Where the count n of a rate lives, most specific first.

    safety/rate -> safety/n; safety/rate_public -> safety/n_public, then safety/n;
    safety/class/refusal -> safety/n; safety/rate/cse -> safety/n/cse only (the overall n would
    understate the uncertainty of a sub-group, so no fallback there); base/x -> base/<n>, then <n>."""
    base = key.startswith("base/")
    parts = (key[5:] if base else key).split("/")
    family, second, rest = parts[0], parts[1], parts[2:]
    if second == "class":
        cands = [f"{family}/n"]
    else:
        suffix = re.sub(r"^(accuracy|rate)", "", second)
        specific = f"{family}/n{suffix}" + ("/" + "/".join(rest) if rest else "")
        cands = [specific] if rest else ([specific, f"{family}/n"] if suffix else [specific])
    if base:
        return [f"base/{c}" for c in cands] + cands
    return cands


def count_for(key: str, metrics: dict, fallback: dict | None = None) -> float | None:
    for c in count_key_candidates(key):
        for src in (metrics, fallback or {}):
            v = src.get(c)
            if _finite(v) and v > 0:
                return float(v)
    return None


def rate_interval(key: str, metrics: dict, fallback: dict | None = None) -> tuple[float, float]:
    v, n = metrics.get(key), count_for(key, metrics, fallback)
    if not _finite(v) or n is None or not 0 <= v <= 1:
        return (math.nan, math.nan)
    return wilson(round(v * n), n)


# ------------------------------------------------------------------ loading
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
        metrics = {k: v for k, v in (data.get("metrics") or {}).items() if _finite(v)}
        status = data.get("status") or ("ok" if metrics else "failed")
        reason = data.get("reason")
        if status == "ok" and not metrics:
            status, reason = "failed", reason or "status ok but no metrics"
        runs.append(dict(dir=rel, label=data.get("label"), status=str(status), reason=reason,
                         config_hash=data.get("config_hash"), simulation=data.get("simulation"),
                         params=_flatten(data.get("params") or {}), metrics=metrics,
                         timings={k: v for k, v in _flatten(data.get("timings") or {}).items() if _finite(v)}))
    _fill_labels(runs)
    runs.sort(key=_run_sort_key)
    return runs


def _fill_labels(runs: list[dict]) -> None:
    varying = _varying_params(runs, exclude=())
    for r in runs:
        if not r["label"]:
            r["label"] = " ".join(f"{k}={_fmt(r['params'][k])}" for k in varying if k in r["params"]) or r["dir"]
    # runs that share a label (seed repeats) get the seed appended for display
    seen: dict[str, int] = {}
    for r in runs:
        seen[r["label"]] = seen.get(r["label"], 0) + 1
    for r in runs:
        seed = r["params"].get("seed")
        r["display"] = r["label"] + (f" seed={seed}" if seen[r["label"]] > 1 and seed is not None
                                     and f"seed={seed}" not in r["label"] else "")


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


# ------------------------------------------------------------------ tables
def _is_sim(runs: list[dict]) -> bool:
    return any(r.get("simulation") for r in runs)


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
        g["label"] = re.sub(r"\s*\bseed=\S+", "", first["label"]).strip() or first["label"]
    return list(groups.values())


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


# ------------------------------------------------------------------ plotting helpers
def _plt():
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "mpl"))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _axis_label(metric: str, dirn: str) -> str:
    names = {"math/accuracy": "GSM8K math accuracy", "math/ref_nll": "math reference-answer NLL",
             "safety/rate": "safety rate (share of harmful prompts answered safely)",
             "over_refusal/rate": "over-refusal rate (benign prompts refused)"}
    name = names.get(metric, metric)
    return f"{name}  ({'higher' if dirn == 'max' else 'lower'} is better)"


def _orient(ax, x_dir: str, y_dir: str) -> None:
    """Reverse minimised axes so that 'better' is always right / up."""
    if x_dir == "min":
        ax.invert_xaxis()
    if y_dir == "min":
        ax.invert_yaxis()


def _place_labels(fig, ax, items: list[tuple[float, float, str]], fontsize: float = 8,
                  force: bool = False, segments: Sequence[tuple[float, float, float, float]] = ()) -> list[int]:
    """Greedy label placement: try offsets around each point, keep the first that overlaps neither
    another label nor a marker and stays inside the axes. Returns the indices of the items that found
    no free spot (not drawn unless force=True, then drawn at the default spot). `segments` (x0, y0, x1, y1
    in data coordinates: the error bars) are obstacles too."""
    from matplotlib.transforms import Bbox
    merged: dict[tuple, list] = {}
    for it in items:  # points drawn on top of each other share one label; it[3]: marker radius (pt)
        m = merged.setdefault((round(it[0], 12), round(it[1], 12)), [it[0], it[1], [], 6.0])
        m[2].append(it[2])
        m[3] = max(m[3], it[3] if len(it) > 3 else 6.0)
    items = [(x, y, ", ".join(t), r) for x, y, t, r in merged.values()]
    renderer = fig.canvas.get_renderer()
    ax_box = ax.get_window_extent(renderer)
    taken = []
    for x, y, _, r in items:
        px, py = ax.transData.transform((x, y))
        pad = r * fig.dpi / 72
        taken.append(Bbox.from_extents(px - pad, py - pad, px + pad, py + pad))
    for x0, y0, x1, y1 in segments:
        (ax0, ay0), (ax1, ay1) = ax.transData.transform((x0, y0)), ax.transData.transform((x1, y1))
        taken.append(Bbox.from_extents(min(ax0, ax1) - 1, min(ay0, ay1) - 1, max(ax0, ax1) + 1, max(ay0, ay1) + 1))
    dirs = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    failed = []
    for i, (x, y, text, r) in enumerate(items):
        placed = None
        for radius in tuple(v + max(0.0, r - 6) for v in (6, 11, 18, 28, 40, 55))[: 6 if force else 4]:  # long leader lines only for numbers
            for dx, dy in dirs:
                ha = "left" if dx > 0 else "right" if dx < 0 else "center"
                va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
                ann = ax.annotate(text, (x, y), xytext=(dx * radius, dy * radius), textcoords="offset points",
                                  ha=ha, va=va, fontsize=fontsize, zorder=6,
                                  arrowprops=dict(arrowstyle="-", color="0.55", lw=0.6, shrinkA=0, shrinkB=4)
                                  if radius > 6 else None)
                bb = _text_extent(ann, renderer).expanded(1.04, 1.12)
                inside = ax_box.contains(bb.x0, bb.y0) and ax_box.contains(bb.x1, bb.y1)
                if inside and not any(bb.overlaps(t) for t in taken):
                    placed = ann
                    break
                ann.remove()
            if placed:
                break
        if placed is None:
            failed.append(i)
            if not force:
                continue
            placed = ax.annotate(text, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=fontsize, zorder=6)
        taken.append(_text_extent(placed, renderer))
    return failed


def _text_extent(ann, renderer):
    """The annotation's text box alone (Annotation.get_window_extent also covers the leader line)."""
    from matplotlib.text import Text
    ann.update_positions(renderer)
    return Text.get_window_extent(ann, renderer)


def _labelled(build) -> Any:
    """build(numbered) -> (fig, [(ax, items, segments)]). Full labels when they all fit, else numbers + a key."""
    fig, jobs = build(False)
    _freeze(fig)
    if not any(_place_labels(fig, ax, items, segments=seg) for ax, items, seg in jobs):
        return fig
    _plt().close(fig)
    fig, jobs = build(True)
    _freeze(fig)
    for ax, items, seg in jobs:
        _place_labels(fig, ax, items, force=True, segments=seg)
    return fig


def _key(fig, gs_cell, entries: list[tuple[str, str, str]], width_in: float) -> None:
    """The numbered key below the plot: entries (number, label, colour)."""
    kax = fig.add_subplot(gs_cell)
    kax.axis("off")
    ncol = max(1, int(width_in // 3.6))
    nrow = max(1, math.ceil(len(entries) / ncol))
    for i, (num, text, colour) in enumerate(entries):
        col, row = divmod(i, nrow)
        kax.text(col / ncol, 1 - (row + 0.5) / nrow, f"{num:>3}  {text}", transform=kax.transAxes,
                 fontsize=7.8, va="center", ha="left", color=colour)


def _key_height(n: int, width_in: float) -> float:
    ncol = max(1, int(width_in // 3.6))
    return 0.2 * math.ceil(n / ncol) + 0.15


def _titles(fig, title: str, sim: bool, sub: str | None = None) -> None:
    """Suptitle: bold title, then (simulation) a blank line that _freeze() fills with the red note, then sub."""
    import textwrap
    lines = [title] + ([" "] if sim else []) + ([textwrap.fill(sub, int(fig.get_figwidth() * 11))] if sub else [])
    fig.suptitle("\n".join(lines), fontsize=11.5)
    fig._report_sim = sim


def _freeze(fig) -> None:
    """Run the layout once, then fix it (labels are placed in a settled layout) and draw the red
    simulation note into the title's reserved line."""
    fig.canvas.draw()
    fig.set_layout_engine("none")
    st = fig._suptitle
    if st is not None and getattr(fig, "_report_sim", False):
        bb = st.get_window_extent(fig.canvas.get_renderer())
        n = st.get_text().count("\n") + 1
        yc = (bb.y1 - 1.5 * bb.height / n) / fig.bbox.height  # the reserved second line
        fig.text(0.5, yc, f"\u26a0 {SIM_NOTE}", ha="center", va="center", fontsize=11.5, color="#b30000",
                 fontweight="bold")


def _rate_axis(ax, which: str) -> None:
    from matplotlib.ticker import PercentFormatter
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    flip = lo > hi
    a, b = sorted((lo, hi))
    a, b = max(a, -0.03), min(b, 1.03)
    (ax.set_xlim if which == "x" else ax.set_ylim)((b, a) if flip else (a, b))


# ------------------------------------------------------------------ plotted units (a run, or a seed group)
def _units(runs: list[dict], groups: list[dict], base: dict, test_metric: str, aggregate: bool) -> list[dict]:
    """What gets one marker: every ok run, or (aggregate) every config with its seeds' mean and std."""
    counts = _counts_only(runs)
    b_rate, b_n = base.get(test_metric), count_for(f"base/{test_metric}", {f"base/{k}": v for k, v in base.items()}, counts)
    units = []
    members = [g["ok"] for g in groups if g["ok"]] if aggregate else [[r] for r in runs if r["status"] == "ok"]
    for rs in members:
        u = dict(runs=rs, n_seeds=len(rs), bounds={})
        if len(rs) == 1:
            r = rs[0]
            u["label"], u["metrics"] = (r["display"] if not aggregate else
                                        re.sub(r"\s*\bseed=\S+", "", r["label"]).strip() or r["label"]), dict(r["metrics"])
            for k, v in r["metrics"].items():
                if is_rate(k):
                    lo, hi = rate_interval(k, r["metrics"])
                    if _finite(lo):
                        u["bounds"][k] = (lo, hi, "wilson")
        else:
            u["label"] = re.sub(r"\s*\bseed=\S+", "", rs[0]["label"]).strip() or rs[0]["label"]
            u["label"] += f" (n={len(rs)} seeds)"
            u["metrics"] = {}
            for k in _ordered_union(r["metrics"] for r in rs):
                vals = [r["metrics"][k] for r in rs if _finite(r["metrics"].get(k))]
                m, s = _mean_std(vals)
                u["metrics"][k] = m
                if _finite(s):
                    u["bounds"][k] = (m - s, m + s, "std")
        # two-proportion z-test against the base model, counts pooled over seeds
        k_sum = n_sum = 0.0
        for r in rs:
            v, n = r["metrics"].get(test_metric), count_for(test_metric, r["metrics"])
            if _finite(v) and n:
                k_sum, n_sum = k_sum + round(v * n), n_sum + n
        u["p_vs_base"] = (two_proportion_p(k_sum, n_sum, round(b_rate * b_n), b_n)
                          if n_sum and _finite(b_rate) and b_n else math.nan)
        u["approx_base"] = _finite(u["p_vs_base"]) and u["p_vs_base"] >= ALPHA
        units.append(u)
    return units


def _warn_suffix(m: dict, base: dict) -> str:
    d, bd = m.get("safety/class/degenerate"), base.get("safety/class/degenerate", 0.0)
    if _finite(d) and d >= 0.2 and d >= (bd if _finite(bd) else 0) + 0.1:
        return f" [{d:.0%} degenerate]"
    return ""


def _err(u: dict, k: str, v: float):
    b = u["bounds"].get(k)
    if not b:
        return None
    return [[max(0.0, v - b[0])], [max(0.0, b[1] - v)]]


def plot_tradeoff(path: Path, runs: list[dict], groups: list[dict], y: str = "safety/rate",
                  xs: Sequence[str] = ("math/accuracy", "math/ref_nll"), sim: bool = False) -> Path:
    plt = _plt()
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.lines import Line2D

    base = base_metrics(runs)
    counts = _counts_only(runs)
    bm = {f"base/{k}": v for k, v in base.items()}
    aggregate = any(len(g["ok"]) >= 2 for g in groups)
    units = _units(runs, groups, base, y if is_rate(y) else "safety/rate", aggregate)
    seed_ns = {u["n_seeds"] for u in units}
    if aggregate and len(seed_ns) == 1:  # every point is a mean over the same number of seeds: say it once
        for u in units:
            u["label"] = u["label"].replace(f" (n={u['n_seeds']} seeds)", "")
    xs = [x for x in xs if any(_finite(u["metrics"].get(x)) and _finite(u["metrics"].get(y)) for u in units)] or list(xs[:1])
    n_failed = sum(r["status"] != "ok" for r in runs)
    n_ok = len(runs) - n_failed

    orr = [u["metrics"].get("over_refusal/rate") for u in units] + [base.get("over_refusal/rate")]
    orr = [v for v in orr if _finite(v)]
    cmap = LinearSegmentedColormap.from_list("or", ["#2c7bb6", "#7b3294", "#e66101"])
    norm = Normalize(vmin=min(orr), vmax=max(orr) if max(orr) > min(orr) else min(orr) + 0.05) if orr else None

    def colour(m):
        v = m.get("over_refusal/rate")
        return cmap(norm(v)) if norm is not None and _finite(v) else "#4a4a4a"

    has_base = _finite(base.get(y))
    full = [u["label"] + (" ≈ base" if u["approx_base"] else "") + _warn_suffix(u["metrics"], base) for u in units]
    width, height = 6.6 * len(xs) + 1.2, 6.4

    def build(numbered: bool):
        key_h = _key_height(len(units), width) if numbered else 0
        fig = plt.figure(figsize=(width, height + key_h), layout="constrained")
        gs = fig.add_gridspec(2 if numbered else 1, len(xs), height_ratios=[height - 1.4, key_h] if numbered else None)
        axes = [fig.add_subplot(gs[0, i]) for i in range(len(xs))]
        jobs = []
        for ax, x in zip(axes, xs):
            x_dir, y_dir = direction(x), direction(y)
            bx, by = base.get(x), base.get(y)
            if _finite(by):  # the base model's value and its Wilson band
                blo, bhi = rate_interval(f"base/{y}", bm, counts)
                if _finite(blo):
                    ax.axhspan(blo, bhi, color="0.88", zorder=0, lw=0)
                ax.axhline(by, color="0.5", ls="--", lw=0.9, zorder=1)
            if _finite(bx):
                ax.axvline(bx, color="0.5", ls=":", lw=0.9, zorder=1)
            items, segs = [], []
            for i, u in enumerate(units):
                m = u["metrics"]
                vx, vy = m.get(x), m.get(y)
                if not (_finite(vx) and _finite(vy)):
                    continue
                kind = next((b[2] for b in (u["bounds"].get(y), u["bounds"].get(x)) if b), "wilson")
                if u["bounds"].get(x):
                    segs.append((u["bounds"][x][0], vy, u["bounds"][x][1], vy))
                if u["bounds"].get(y):
                    segs.append((vx, u["bounds"][y][0], vx, u["bounds"][y][1]))
                ax.errorbar(vx, vy, xerr=_err(u, x, vx), yerr=_err(u, y, vy), fmt="none", zorder=2,
                            ecolor="0.15" if kind == "std" else "0.55", elinewidth=1.4 if kind == "std" else 0.9,
                            capsize=3.5 if kind == "std" else 2.5)
                c = colour(m)
                if len(u["runs"]) > 1:  # the individual seeds, faint
                    ax.scatter([r["metrics"].get(x) for r in u["runs"]], [r["metrics"].get(y) for r in u["runs"]],
                               s=14, color=c, alpha=0.35, zorder=2, lw=0)
                if u["approx_base"]:
                    ax.scatter(vx, vy, s=95, facecolor="white", edgecolor=c, linewidth=2.2, zorder=4)
                else:
                    ax.scatter(vx, vy, s=95, facecolor=c, edgecolor="black", linewidth=0.6, zorder=4)
                items.append((vx, vy, str(i + 1) if numbered else full[i]))
            if _finite(bx) and _finite(by):
                ax.scatter(bx, by, marker="*", s=420, facecolor=colour(base), edgecolor="black", linewidth=1.1, zorder=5)
                items.insert(0, (bx, by, "base", 11.0))
            ax.set_xlabel(_axis_label(x, x_dir) + ("  → axis reversed" if x_dir == "min" else ""))
            ax.set_ylabel(_axis_label(y, y_dir))
            ax.grid(True, color="0.92", lw=0.6, zorder=0)
            ax.margins(0.14)
            _orient(ax, x_dir, y_dir)
            for k, w in ((x, "x"), (y, "y")):
                if is_rate(k):
                    _rate_axis(ax, w)
            ax.set_title(f"{y} vs {x}", fontsize=10)
            ax.text(0.99, 0.01, "better ↗", transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="0.4")
            jobs.append((ax, items, segs))
        if norm is not None:
            cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.85, pad=0.01)
            cb.set_label("over-refusal rate on benign prompts (marker colour; lower is better)")
        if numbered:
            _key(fig, gs[1, :], [(str(i + 1), t, "black") for i, t in enumerate(full)], width)
        handles = [
            Line2D([], [], marker="*", ls="none", ms=15, mfc="0.75", mec="black",
                   label="base model (dashed line; grey band = its 95% Wilson interval)"),
            Line2D([], [], marker="o", ls="none", ms=9, mfc="0.45", mec="black",
                   label=f"fine-tuned: safety differs from base (p < {ALPHA})"),
            Line2D([], [], marker="o", ls="none", ms=9, mfc="white", mec="0.35", mew=2,
                   label=f"≈ base: safety difference within noise (p ≥ {ALPHA})"),
        ] if has_base else [Line2D([], [], marker="o", ls="none", ms=9, mfc="0.45", mec="black",
                                   label="fine-tuned run (no base-model values in this sweep)")]
        handles.append(Line2D([], [], color="0.55", lw=0.9, marker="|", ms=6, label="error bars: Wilson 95% interval (rates)"))
        if aggregate:
            how = f"mean of {next(iter(seed_ns))} seeds" if len(seed_ns) == 1 else "mean over its seeds (n in label)"
            handles.append(Line2D([], [], color="0.15", lw=1.4, marker="|", ms=8,
                                  label=f"point = {how}, error bars: ±1 std over seeds; faint dots = single seeds"))
        fig.legend(handles=handles, loc="outside lower center", ncol=3 if aggregate else 2, fontsize=8.5, frameon=False)
        sub = (f"{n_ok} successful run(s)" + (f", {n_failed} failed (not shown, see tradeoff.csv)" if n_failed else "")
               + ("; within noise = two-proportion z-test vs base" + (", seed counts pooled" if aggregate else "")
                  if has_base else ""))
        _titles(fig, "Safety vs math skill after math fine-tuning", sim, sub)
        return fig, jobs

    fig = _labelled(build)
    fig.savefig(path, dpi=140)
    plt.close(fig)
    return path


def plot_pareto(path: Path, runs: list[dict], mask: list[bool], x: str, y: str, dx: str, dy: str, sim: bool) -> Path:
    plt = _plt()
    from matplotlib.lines import Line2D

    base = base_metrics(runs)
    ok = [(r, f) for r, f in zip(runs, mask) if r["status"] == "ok"
          and _finite(r["metrics"].get(x)) and _finite(r["metrics"].get(y))]
    ok.sort(key=lambda rf: not rf[1])  # the front first: labelled first, numbered first
    n_failed = sum(r["status"] != "ok" for r in runs)
    width, height = 9.5, 7.0

    def build(numbered: bool):
        key_h = _key_height(len(ok), width) if numbered else 0
        fig = plt.figure(figsize=(width, height + key_h), layout="constrained")
        gs = fig.add_gridspec(2 if numbered else 1, 1, height_ratios=[height - 1.4, key_h] if numbered else None)
        ax = fig.add_subplot(gs[0, 0])
        items, segs = [], []
        for i, (r, front) in enumerate(ok):
            vx, vy = r["metrics"][x], r["metrics"][y]
            for k, v, horiz in ((x, vx, True), (y, vy, False)):
                if is_rate(k):
                    lo, hi = rate_interval(k, r["metrics"])
                    if _finite(lo):
                        e = [[v - lo], [hi - v]]
                        segs.append((lo, vy, hi, vy) if horiz else (vx, lo, vx, hi))
                        ax.errorbar(vx, vy, xerr=e if horiz else None, yerr=None if horiz else e, fmt="none",
                                    ecolor="#d62728" if front else "0.7", elinewidth=0.8, alpha=0.5, capsize=2, zorder=2)
            ax.scatter(vx, vy, s=90 if front else 45, color="#d62728" if front else "0.6",
                       edgecolor="black" if front else "none", lw=0.6, zorder=4 if front else 3)
            items.append((vx, vy, str(i + 1) if numbered else r["display"]))
        fr = sorted(((r["metrics"][x], r["metrics"][y]) for r, f in ok if f), key=lambda p: (p[0], p[1]))
        if len(fr) > 1:
            ax.plot(*zip(*fr), color="#d62728", lw=1.6, zorder=3)
        bx, by = base.get(x), base.get(y)
        if _finite(bx) and _finite(by):
            ax.scatter(bx, by, marker="*", s=420, facecolor="#ffd700", edgecolor="black", lw=1.1, zorder=5)
            items.insert(0, (bx, by, "base", 11.0))
            ax.axhline(by, color="0.6", ls="--", lw=0.8, zorder=1)
            ax.axvline(bx, color="0.6", ls=":", lw=0.8, zorder=1)
        if not ok:
            ax.text(0.5, 0.5, f"no successful run has both {x} and {y}", transform=ax.transAxes, ha="center")
        ax.set_xlabel(_axis_label(x, dx) + ("  → axis reversed" if dx == "min" else ""))
        ax.set_ylabel(_axis_label(y, dy))
        ax.grid(True, color="0.92", lw=0.6)
        ax.margins(0.14)
        _orient(ax, dx, dy)
        for k, w in ((x, "x"), (y, "y")):
            if is_rate(k):
                _rate_axis(ax, w)
        ax.text(0.99, 0.01, "better ↗", transform=ax.transAxes, ha="right", va="bottom", fontsize=9, color="0.4")
        if numbered:
            _key(fig, gs[1, 0], [(str(i + 1), r["display"] + (" (front)" if f else ""), "#b30000" if f else "0.3")
                                 for i, (r, f) in enumerate(ok)], width)
        handles = [Line2D([], [], marker="o", color="#d62728", mec="black", ms=9, label="Pareto front (non-dominated runs)"),
                   Line2D([], [], marker="o", ls="none", color="0.6", ms=7, label="dominated run"),
                   Line2D([], [], marker="*", ls="none", mfc="#ffd700", mec="black", ms=15,
                          label="base model (reference, not a candidate)"),
                   Line2D([], [], color="0.6", lw=0.8, marker="|", ms=6, label="Wilson 95% interval")]
        if not (_finite(bx) and _finite(by)):
            del handles[2]
        fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8.5, frameon=False)
        _titles(fig, f"Pareto front: {dx}imize {x}, {dy}imize {y}", sim,
                f"{sum(f for _, f in ok)} of {len(ok)} runs on the front"
                + (f"; {n_failed} failed run(s) not shown" if n_failed else ""))
        return fig, [(ax, items, segs)]

    fig = _labelled(build)
    fig.savefig(path, dpi=140)
    plt.close(fig)
    return path


def plot_classes(path: Path, runs: list[dict], sim: bool) -> Path:
    plt = _plt()
    from matplotlib.patches import Patch

    base = base_metrics(runs)
    bars = ([("base", base)] if base else []) + [(r["display"], r["metrics"]) for r in runs if r["status"] == "ok"]
    classes = _ordered_union([{k.split("/", 2)[2]: 0 for k in m if k.startswith("safety/class/")} for _, m in bars])
    classes = [c for c in CLASS_COLOURS if c in classes] + [c for c in classes if c not in CLASS_COLOURS]
    colours = dict(CLASS_COLOURS)
    for i, c in enumerate(c for c in classes if c not in CLASS_COLOURS):
        colours[c] = EXTRA_CLASS_COLOURS[i % len(EXTRA_CLASS_COLOURS)]
    fig, ax = plt.subplots(figsize=(10, 1.9 + 0.42 * len(bars)), layout="constrained")
    ypos = list(range(len(bars)))[::-1]
    unreported = False
    for yp, (name, m) in zip(ypos, bars):
        left = 0.0
        for c in classes:
            v = m.get(f"safety/class/{c}")
            if not _finite(v) or v <= 0:
                continue
            ax.barh(yp, v, left=left, color=colours[c], edgecolor="white", lw=0.8, height=0.72)
            if v >= 0.045:
                ax.text(left + v / 2, yp, f"{v:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if c in ("refusal", "compliance") else "black")
            left += v
        if left < 0.995:
            unreported = True
            ax.barh(yp, 1 - left, left=left, color="white", edgecolor="0.6", hatch="///", lw=0.6, height=0.72)
    ax.set_yticks(ypos, [n for n, _ in bars], fontsize=8.5)
    if base:
        ax.get_yticklabels()[0].set_fontweight("bold")
    if base and len(bars) > 1:
        ax.axhline(ypos[0] - 0.5, color="black", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("share of the generations on harmful (safety) prompts")
    handles = [Patch(color=colours[c], label={"refusal": "refusal", "compliance": "compliance (answered; the judge says if harmful)",
                                              "degenerate": "degenerate (broken, looping text)"}.get(c, c))
               for c in classes] + ([Patch(facecolor="white", edgecolor="0.6", hatch="///", label="not reported")]
                                    if unreported else [])
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8.5, frameon=False)
    if not classes:
        ax.text(0.5, 0.5, "no safety/class/* metrics in this sweep", transform=ax.transAxes, ha="center")
    _titles(fig, "What the models did on harmful prompts", sim,
            "a model that merely breaks (degenerate) is not one that turned harmful")
    _freeze(fig)
    fig.savefig(path, dpi=140)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ pareto table
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


# ------------------------------------------------------------------ the report
def report(sweep_dir: str | Path, x: str = "math/accuracy", y: str = "safety/rate", out_dir: str | Path | None = None,
           x_direction: str | None = None, y_direction: str | None = None, verbose: bool = True) -> dict[str, Path]:
    """Write tradeoff.csv/.png, tradeoff_by_config.csv, pareto.csv/.png, safety_classes.png; return their paths."""
    sweep_dir = Path(sweep_dir)
    runs = load_runs(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    sim = _is_sim(runs)
    dx, dy = direction(x, x_direction), direction(y, y_direction)
    paths: dict[str, Path] = {}

    cols, rows = tradeoff_rows(runs)
    write_csv(out / "tradeoff.csv", cols, rows)
    paths["tradeoff.csv"] = out / "tradeoff.csv"

    groups = group_by_config(runs)
    ccols, crows = config_rows(runs, groups)
    write_csv(out / "tradeoff_by_config.csv", ccols, crows)
    paths["tradeoff_by_config.csv"] = out / "tradeoff_by_config.csv"

    pcols, prows, mask = pareto_rows(runs, x, y, dx, dy)
    write_csv(out / "pareto.csv", pcols, prows)
    paths["pareto.csv"] = out / "pareto.csv"

    xs = ["math/accuracy", "math/ref_nll"] + ([x] if x not in ("math/accuracy", "math/ref_nll") else [])
    paths["tradeoff.png"] = plot_tradeoff(out / "tradeoff.png", runs, groups, y=y, xs=xs, sim=sim)
    paths["pareto.png"] = plot_pareto(out / "pareto.png", runs, mask, x, y, dx, dy, sim)
    paths["safety_classes.png"] = plot_classes(out / "safety_classes.png", runs, sim)

    if verbose:
        print(summary(runs, mask, x, y, dx, dy, groups))
        print(f"report written to {out}/")
        for name, p in paths.items():
            print(f"  {p}")
    return paths


def summary(runs: list[dict], mask: list[bool], x: str, y: str, dx: str, dy: str, groups: list[dict]) -> str:
    ok = [r for r in runs if r["status"] == "ok"]
    failed = [r for r in runs if r["status"] != "ok"]
    lines = []
    if _is_sim(runs):
        lines.append(f"*** {SIM_NOTE} ***")
    lines.append(f"{len(runs)} run(s): {len(ok)} ok, {len(failed)} failed")
    for r in failed:
        lines.append(f"  FAILED {r['display']} ({r['dir']}): {r['reason'] or 'no reason given'}")
    front = [r["display"] for r, f in zip(runs, mask) if f]
    lines.append(f"Pareto front ({dx} {x}, {dy} {y}): " + (", ".join(front) if front else "none"))
    multi = [g for g in groups if len(g["ok"]) >= 2]
    if multi:
        lines.append(f"{len(multi)} config(s) repeated over seeds: aggregated in tradeoff_by_config.csv")
    return "\n".join(lines)


# ------------------------------------------------------------------ W&B
def _typed_columns(rows: list[dict]) -> tuple[list[str], list[list]]:
    """Rows (from report or read back from CSV) -> W&B table columns with one type each (float or str)."""
    cols = _ordered_union(rows)

    def num(v):
        if isinstance(v, bool):
            return None
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    def empty(v):
        return v is None or v == ""

    numeric = {c: all(empty(r.get(c)) or num(r.get(c)) is not None for r in rows) for c in cols}
    data = [[None if empty(r.get(c)) else num(r.get(c)) if numeric[c] else str(r.get(c)) for c in cols] for r in rows]
    return cols, data


def log_to_wandb(paths: dict[str, Path], rows: list[dict], project: str = "forgetting", group: str | None = None,
                 **init_kwargs) -> str:
    """Log the tradeoff table and the report images to one W&B run; returns the run's local dir.
    Works offline (WANDB_MODE=offline)."""
    import wandb

    cols, data = _typed_columns(rows)
    with wandb.init(project=project, group=group, job_type="report", **init_kwargs) as run:
        payload: dict[str, Any] = {"report/tradeoff": wandb.Table(columns=cols, data=data)}
        for name, p in paths.items():
            p = Path(p)
            if p.suffix == ".png" and p.exists():
                payload[f"report/{p.stem}"] = wandb.Image(str(p), caption=p.stem)
            elif p.suffix == ".csv" and p.exists() and p.name != "tradeoff.csv":
                with open(p, newline="", encoding="utf-8") as f:
                    c2, d2 = _typed_columns(list(csv.DictReader(f)))
                payload[f"report/{p.stem}"] = wandb.Table(columns=c2, data=d2)
        run.log(payload)
        if any(r.get("note") for r in rows):
            run.summary["note"] = SIM_NOTE
        run_dir = str(Path(run.dir).parent)
    return run_dir


# ------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("sweep_dir", help="Hydra multirun directory (searched recursively for metrics.json)")
    p.add_argument("--x", default="math/accuracy", help="x objective for the Pareto front (default: math/accuracy)")
    p.add_argument("--y", default="safety/rate", help="y objective / safety metric (default: safety/rate)")
    gx = p.add_mutually_exclusive_group()
    gx.add_argument("--maximize-x", dest="x_direction", action="store_const", const="max")
    gx.add_argument("--minimize-x", dest="x_direction", action="store_const", const="min",
                    help="default: minimize metrics ending in nll/loss, maximize the rest")
    gy = p.add_mutually_exclusive_group()
    gy.add_argument("--maximize-y", dest="y_direction", action="store_const", const="max")
    gy.add_argument("--minimize-y", dest="y_direction", action="store_const", const="min")
    p.add_argument("--out-dir", default=None, help="default: <sweep_dir>/report")
    p.add_argument("--wandb", action="store_true", help="also log the table and images to a W&B run")
    p.add_argument("--wandb-project", default="forgetting")
    p.add_argument("--wandb-group", default=None, help="default: the sweep directory's name")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    try:
        paths = report(args.sweep_dir, x=args.x, y=args.y, out_dir=args.out_dir,
                       x_direction=args.x_direction, y_direction=args.y_direction)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.wandb:
        with open(paths["tradeoff.csv"], newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        run_dir = log_to_wandb(paths, rows, project=args.wandb_project,
                               group=args.wandb_group or Path(args.sweep_dir).resolve().name)
        print(f"logged to W&B: {run_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from . import env

    env.setup()  # offline W&B, caches inside outputs/
    p = add_arguments(argparse.ArgumentParser(prog="python -m forgetting.report", description=__doc__.split("\n")[0]))
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
