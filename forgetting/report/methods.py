"""The methods comparison: methods.csv / methods.md (one row per method x poison ratio, base model first)
and methods.png, written when a sweep varies the continual-learning `method` or the poisoned-data ratio."""
from __future__ import annotations

import re
from pathlib import Path

from .runs import SIM_NOTE, _counts_only, _fmt, _is_sim, _ordered_union, _varying_params, base_metrics
from .stats import ALPHA, _finite, count_for, direction, is_rate, two_proportion_p, wilson
from .tables import write_csv

DEFAULTS = {"method": "sft", "poison_ratio": 0.0}  # what runs from before these params existed did
UTILITY = ("math/accuracy", "math/ref_nll", "over_refusal/rate")
SAFETY = "safety/rate"
REFUSAL_NLL = "safety/refusal_nll"  # continuous: the base's own refusals under the model (lower = kept)


def _varies_within_method(runs: list[dict], key: str) -> bool:
    """A method's own hyperparameter only separates rows when it differs between runs of one method."""
    seen: dict[str, set] = {}
    for r in runs:
        seen.setdefault(_config(r)[0], set()).add(_fmt(r["params"].get(key)))
    return any(len(v) > 1 for v in seen.values())


def _config(r: dict) -> tuple[str, float]:
    m, p = r["params"].get("method"), r["params"].get("poison_ratio")
    return (str(m) if m is not None else DEFAULTS["method"], float(p) if _finite(p) else DEFAULTS["poison_ratio"])


def varies(runs: list[dict]) -> bool:
    """True when the ok runs hold >= 2 distinct methods or >= 2 distinct poison ratios."""
    cfgs = [_config(r) for r in runs if r["status"] == "ok"]
    return len({m for m, _ in cfgs}) >= 2 or len({p for _, p in cfgs}) >= 2


def asr_sets(runs: list[dict]) -> list[str]:
    """The harmful sets with an attack success rate (asr/<name>, not asr/mean), in order of appearance."""
    keys = _ordered_union(r["metrics"] for r in runs if r["status"] == "ok")
    names = [m.group(1) for k in keys if (m := re.fullmatch(r"(?:base/)?asr/([^/]+)", k))]
    return [n for n in dict.fromkeys(names) if n != "mean"]


def _pool(rs: list[dict], k: str) -> tuple[float, float, float, float | None]:
    """(value, lo, hi, n): a rate with counts in every run is pooled (k and n summed, Wilson interval);
    anything else is the mean over the runs, without an interval."""
    pairs = [(r["metrics"][k], count_for(k, r["metrics"])) for r in rs if _finite(r["metrics"].get(k))]
    if not pairs:
        return (float("nan"),) * 3 + (None,)
    if is_rate(k) and all(n for _, n in pairs):
        n = sum(n for _, n in pairs)
        succ = sum(v * c for v, c in pairs)
        return (succ / n, *wilson(round(succ), n), n)
    return (sum(v for v, _ in pairs) / len(pairs), float("nan"), float("nan"), None)


def method_rows(runs: list[dict], extra: tuple[str, ...] = ()) -> tuple[list[str], list[dict]]:
    """Columns and rows of methods.csv: the base model, then one row per (method, poison_ratio[, other
    varying params]) sorted by poison ratio, then method (sft first). Rates: value, _lo / _hi (Wilson 95 %,
    counts pooled over seeds), _delta (run - base, in the metric's units); safety also p_vs_base and
    differs_from_base (two-proportion z-test, 5 %)."""
    ok = [r for r in runs if r["status"] == "ok"]
    base, counts = base_metrics(runs), _counts_only(runs)
    bm = {f"base/{k}": v for k, v in base.items()}
    keys = list(dict.fromkeys([SAFETY, *(f"asr/{s}" for s in asr_sets(runs)), "asr/mean", REFUSAL_NLL, *UTILITY,
                               *extra]))
    others = [k for k in _varying_params(ok) if k not in DEFAULTS  # e.g. lr, when the sweep varies it too
              and (not k.startswith("method_hparams.") or _varies_within_method(ok, k))]
    sim = _is_sim(runs)

    groups: dict[tuple, dict] = {}
    for r in runs:
        key = _config(r) + tuple(_fmt(r["params"].get(k)) for k in others)
        g = groups.setdefault(key, dict(ok=[], failed=[]))
        g["ok" if r["status"] == "ok" else "failed"].append(r)

    brow = dict(note=SIM_NOTE if sim else "", method="base", _base=True)
    for k in keys:
        v, n = base.get(k), count_for(f"base/{k}", bm, counts)
        brow[k] = v
        if is_rate(k) and _finite(v) and n:
            brow[f"{k}_lo"], brow[f"{k}_hi"] = wilson(round(v * n), n)
    b_n = count_for(f"base/{SAFETY}", bm, counts)

    rows = []
    for (method, ratio, *other), g in groups.items():
        if not g["ok"]:
            continue  # listed with the failed runs only
        row = dict(note=SIM_NOTE if sim else "", method=method, poison_ratio=ratio, n_runs=len(g["ok"]),
                   n_failed=len(g["failed"]), seeds=";".join(_fmt(r["params"].get("seed", "")) for r in g["ok"]),
                   config=" ".join(f"{k}={v}" for k, v in zip(others, other)))
        for k in keys:
            v, lo, hi, n = _pool(g["ok"], k)
            row[k], row[f"{k}_lo"], row[f"{k}_hi"] = v, lo, hi
            if _finite(v) and _finite(base.get(k)):
                row[f"{k}_delta"] = v - base[k]
            if k == SAFETY and _finite(v) and n and _finite(base.get(k)) and b_n:
                p = two_proportion_p(round(v * n), n, round(base[k] * b_n), b_n)
                row["safety/p_vs_base"], row["safety/differs_from_base"] = p, p < ALPHA
        rows.append(row)
    rows.sort(key=lambda rw: (rw["poison_ratio"], rw["method"] != "sft", rw["method"]))  # stable: others keep run order

    metric_cols = []
    for k in keys:
        metric_cols += [k] + ([f"{k}_lo", f"{k}_hi"] if is_rate(k) else []) + [f"{k}_delta"]
        if k == SAFETY:
            metric_cols += ["safety/p_vs_base", "safety/differs_from_base"]
    all_rows = [brow] + rows
    metric_cols = [c for c in metric_cols if any(_present(rw.get(c)) for rw in all_rows)]  # no all-empty columns
    columns = (["note", "method", "poison_ratio"] + (["config"] if others else [])
               + ["n_runs", "n_failed", "seeds"] + metric_cols)
    return columns, all_rows


def _present(v) -> bool:
    return isinstance(v, bool) or _finite(v)


# ------------------------------------------------------------------ Markdown
def _signed(x: float, fmt: str = ".1f") -> str:
    s = format(x, "+" + fmt)
    return ("±" + s[1:]) if float(s) == 0 else s.replace("-", "−")


def _rate_cell(row: dict, k: str) -> str:
    v = row.get(k)
    if not _finite(v):
        return "–"
    s = f"{100 * v:.1f} %"
    if _finite(row.get(f"{k}_lo")) and _finite(row.get(f"{k}_hi")):
        s += f" [{100 * row[f'{k}_lo']:.1f}, {100 * row[f'{k}_hi']:.1f}]"
    if _finite(row.get(f"{k}_delta")):
        s += f" ({_signed(100 * row[f'{k}_delta'])})"
    return s


def _cell(row: dict, k: str) -> str:
    if k == "safety/differs_from_base":
        p = row.get("safety/p_vs_base")
        return "–" if not _finite(p) else f"{'yes' if p < ALPHA else 'no'} (p={p:.2g})"
    if is_rate(k):
        return _rate_cell(row, k)
    v, d = row.get(k), row.get(f"{k}_delta")
    return "–" if not _finite(v) else f"{v:.3f}" + (f" ({_signed(d, '.3f')})" if _finite(d) else "")


def _table(columns: list[str], rows: list[dict], keys: list[tuple[str, str]]) -> list[str]:
    keys = [(k, h) for k, h in keys if k in columns]
    head = ["method", "poison ratio"] + (["config"] if "config" in columns else []) + ["runs"] + [h for _, h in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rw in rows:
        first = [f"**{rw['method']}**" if rw.get("_base") else rw["method"],
                 "–" if rw.get("_base") else _fmt(rw["poison_ratio"])]
        first += ([rw.get("config") or "–"] if "config" in columns else []) + ["–" if rw.get("_base") else str(rw["n_runs"])]
        lines.append("| " + " | ".join(first + [_cell(rw, k) for k, _ in keys]) + " |")
    return lines


def methods_markdown(runs: list[dict], columns: list[str], rows: list[dict]) -> str:
    """methods.md: a safety / ASR table and a utility / over-refusal table, then the failed runs."""
    sets = asr_sets(runs)
    safety = [(SAFETY, "safety rate"), ("safety/differs_from_base", f"≠ base (p < {ALPHA})")]
    safety += [(f"asr/{s}", f"ASR {s}") for s in sets] + [("asr/mean", "ASR mean"), (REFUSAL_NLL, "refusal NLL")]
    utility = [("math/accuracy", "math accuracy"), ("math/ref_nll", "math ref. NLL"), ("over_refusal/rate", "over-refusal")]
    out = ([f"> **⚠ {SIM_NOTE}**", ""] if _is_sim(runs) else []) + ["# Continual-learning methods vs the base model", ""]
    out += ["Rates: value, [Wilson 95 % interval], (change from base in percentage points); seeds pooled. "
            "ASR (attack success rate) and over-refusal: lower is better; math ref. NLL: lower is better. "
            f"≠ base: two-proportion z-test of the safety count against the base model at the {100 * ALPHA:g} % level.", ""]
    out += ["## Safety and attack success", ""] + _table(columns, rows, safety)
    out += ["", "## Utility and over-refusal", ""] + _table(columns, rows, utility)
    failed = [r for r in runs if r["status"] != "ok"]
    if failed:
        out += ["", f"## Failed runs ({len(failed)}, not in the tables)", ""]
        out += [f"- {r['display']} (`{r['dir']}`): {r['reason'] or 'no reason given'}" for r in failed]
    return "\n".join(out) + "\n"


def write_methods(out: Path, runs: list[dict], x: str = "math/accuracy", x_direction: str | None = None) -> dict[str, Path]:
    """methods.csv, methods.md, methods.png in `out` when the sweep varies method or poison ratio; else {}."""
    if not varies(runs):
        return {}
    from .methods_plot import plot_methods

    columns, rows = method_rows(runs, extra=(x,))
    paths = {"methods.csv": out / "methods.csv", "methods.md": out / "methods.md"}
    write_csv(paths["methods.csv"], columns, rows)
    paths["methods.md"].write_text(methods_markdown(runs, columns, rows), encoding="utf-8")
    paths["methods.png"] = plot_methods(out / "methods.png", rows, asr_sets(runs), x, direction(x, x_direction),
                                        _is_sim(runs))
    return paths
