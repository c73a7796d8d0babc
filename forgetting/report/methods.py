"""The methods comparison: methods.csv / methods.md (one row per method x poison ratio, base model first)
and methods.png, written when a sweep varies the continual-learning `method` or the poisoned-data ratio."""
from __future__ import annotations

import re
from pathlib import Path

from .runs import (SIM_NOTE, _counts_only, _fmt, _is_sim, _ordered_union, _varying_params, base_metrics, by_task,
                   nll_metric, utility_metric)
from .stats import ALPHA, _finite, count_for, direction, is_rate, t_interval, two_proportion_p, welch_p, wilson
from .tables import write_csv

DEFAULTS = {"method": "sft", "poison_ratio": 0.0}  # what runs from before these params existed did
UTILITY = ("math/accuracy", "math/ref_nll", "over_refusal/rate")  # the math task's; utility_keys() for any task
SAFETY = "safety/rate"
REFUSAL_NLL = "safety/refusal_nll"  # continuous: the base's own refusals under the model (lower = kept)
COMPARED = (SAFETY, *UTILITY)  # compared with sft at the same poison ratio, against seed noise


def utility_keys(runs: list[dict]) -> tuple[str, str, str]:
    """(utility metric, its reference NLL, over-refusal) of these runs: UTILITY for math and old run dirs."""
    u = utility_metric(runs)
    return (u, nll_metric(u), "over_refusal/rate")
# train=false runs (forgetting/eval_only.py): method `base` is the base row itself; an adapter's is "eval-only: <name>"


def _eval_only(r: dict) -> bool:
    m = str(r["params"].get("method"))
    return m == "base" or m.startswith("eval-only")


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
    cfgs = [_config(r) for r in runs if r["status"] == "ok" and r["params"].get("method") != "base"]
    return len({m for m, _ in cfgs}) >= 2 or len({p for _, p in cfgs}) >= 2


def asr_sets(runs: list[dict]) -> list[str]:
    """The harmful sets with an attack success rate (asr/<name>, not asr/mean), in order of appearance."""
    keys = _ordered_union(r["metrics"] for r in runs if r["status"] == "ok")
    names = [m.group(1) for k in keys if (m := re.fullmatch(r"(?:base/)?asr/([^/]+)", k))]
    return [n for n in dict.fromkeys(names) if n != "mean"]


OOD_ASR = "asr_ood/mean"  # mean ASR over the sets the poison source is not (added by the report when some set is)


def in_distribution(runs: list[dict]) -> tuple[list[str], bool]:
    """(ASR sets, safety set?) that the poisoned runs' poison source also is: their params'
    poison_in_distribution (run.poison_params; data.poison.in_distribution=true lets such a run start)."""
    shared: set[str] = set()
    for r in runs:
        if r["status"] == "ok" and _config(r)[1] > 0:
            shared |= {s for s in str(r["params"].get("poison_in_distribution") or "").split(",") if s}
    return [s for s in asr_sets(runs) if f"harmful_sets.{s}" in shared], "safety" in shared


def _add_ood_mean(runs: list[dict], base: dict) -> bool:
    """OOD_ASR in each ok run's metrics (and the base's) when some ASR sets are in distribution and some are
    not; True when added."""
    inside, _ = in_distribution(runs)
    outside = [s for s in asr_sets(runs) if s not in inside]
    if not inside or not outside:
        return False
    for m in [r["metrics"] for r in runs if r["status"] == "ok"] + [base]:
        vals = [m.get(f"asr/{s}") for s in outside]
        if all(_finite(v) for v in vals):
            m[OOD_ASR] = sum(vals) / len(vals)
    return True


def rank_metric(runs: list[dict]) -> str:
    """What the ranking uses: the out-of-distribution ASR mean when some set shares the poison's source,
    else the mean over every set."""
    inside, _ = in_distribution(runs)
    return OOD_ASR if inside and len(inside) < len(asr_sets(runs)) else "asr/mean"


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties counted), by hand: scipy is not a dependency for one 10-line statistic."""
    conc = disc = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            a, b = (x[i] > x[j]) - (x[i] < x[j]), (y[i] > y[j]) - (y[i] < y[j])
            if a and b:
                conc, disc = conc + (a == b), disc + (a != b)
            elif a:
                tx += 1
            elif b:
                ty += 1
    den = ((conc + disc + tx) * (conc + disc + ty)) ** 0.5
    return (conc - disc) / den if den else float("nan")


def _pool(rs: list[dict], k: str) -> dict:
    """One metric over a row's runs (its seeds): value (the mean over seeds), lo / hi (a rate with counts
    in every run: Wilson 95 % of the counts pooled over seeds, i.e. sampling noise within runs), seed_lo /
    seed_hi (95 % t-interval of the per-seed values: seed noise; NaN below 2 seeds; a rate's clipped
    to [0, 1]), n and succ (pooled
    counts, None without), vals (the per-seed values)."""
    pairs = [(r["metrics"][k], count_for(k, r["metrics"])) for r in rs if _finite(r["metrics"].get(k))]
    vals = [v for v, _ in pairs]
    nan = float("nan")
    if not pairs:
        return dict(value=nan, lo=nan, hi=nan, seed_lo=nan, seed_hi=nan, n=None, succ=None, vals=[])
    mean, seed_lo, seed_hi = t_interval(vals)
    if is_rate(k) and _finite(seed_lo):  # a rate's interval stops at 0 and 1
        seed_lo, seed_hi = max(0.0, seed_lo), min(1.0, seed_hi)
    out = dict(value=mean, lo=nan, hi=nan, seed_lo=seed_lo, seed_hi=seed_hi, n=None, succ=None, vals=vals)
    if is_rate(k) and all(n for _, n in pairs):
        out["n"], out["succ"] = sum(n for _, n in pairs), round(sum(v * c for v, c in pairs))
        out["lo"], out["hi"] = wilson(out["succ"], out["n"])
    return out


def method_rows(runs: list[dict], extra: tuple[str, ...] = ()) -> tuple[list[str], list[dict]]:
    """Columns and rows of methods.csv: the base model, then one row per (method, poison_ratio[, other
    varying params]) sorted by poison ratio, then method (sft first); `seed` is never a row key, a row's
    seeds are aggregated. Every metric: value (mean over seeds), _delta (value - base, in the metric's
    units); rates _lo / _hi (Wilson 95 %, counts pooled over seeds); with >= 2 seeds in some row also
    _seed_lo / _seed_hi (95 % t-interval across seeds) and, for safety and utility, _vs_sft (value - sft's
    at the same poison ratio and config), _vs_sft_p (Welch's t-test on the per-seed values) and
    _vs_sft_beyond_noise (p < 5 %). Safety also p_vs_base and differs_from_base (two-proportion z-test)."""
    base, counts = base_metrics(runs), _counts_only(runs)
    utility = utility_keys(runs)
    compared = (SAFETY, *utility)
    runs = [r for r in runs if r["params"].get("method") != "base"]  # an eval-only run of the base: the base row
    ok = [r for r in runs if r["status"] == "ok"]
    ood = _add_ood_mean(runs, base)
    bm = {f"base/{k}": v for k, v in base.items()}
    keys = list(dict.fromkeys([SAFETY, *(f"asr/{s}" for s in asr_sets(runs)), "asr/mean", *([OOD_ASR] if ood else []),
                               REFUSAL_NLL, *utility, *extra]))
    trained = [r for r in ok if not _eval_only(r)]  # eval-only runs: no lr, epochs, ...
    others = [k for k in _varying_params(trained) if k not in DEFAULTS  # e.g. lr, when the sweep varies it too
              and (not k.startswith("method_hparams.") or _varies_within_method(ok, k))]
    sim = _is_sim(runs)

    groups: dict[tuple, dict] = {}
    for r in runs:
        key = _config(r) + tuple(_fmt(r["params"].get(k)) for k in others)
        g = groups.setdefault(key, dict(ok=[], failed=[]))
        g["ok" if r["status"] == "ok" else "failed"].append(r)
    multi = any(len(g["ok"]) >= 2 for g in groups.values())  # else the table is one seed per cell, as before

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
                   n_seeds=len({_fmt(r["params"].get("seed")) for r in g["ok"]}), n_failed=len(g["failed"]),
                   seeds=";".join(_fmt(r["params"].get("seed", "")) for r in g["ok"]),
                   config=" ".join(f"{k}={v}" for k, v in zip(others, other)), _key=(ratio, *other), _vals={})
        for k in keys:
            a = _pool(g["ok"], k)
            row[k], row[f"{k}_lo"], row[f"{k}_hi"] = a["value"], a["lo"], a["hi"]
            row[f"{k}_seed_lo"], row[f"{k}_seed_hi"], row["_vals"][k] = a["seed_lo"], a["seed_hi"], a["vals"]
            if _finite(a["value"]) and _finite(base.get(k)):
                row[f"{k}_delta"] = a["value"] - base[k]
            if k == SAFETY and a["n"] and _finite(base.get(k)) and b_n:
                p = two_proportion_p(a["succ"], a["n"], round(base[k] * b_n), b_n)
                row["safety/p_vs_base"], row["safety/differs_from_base"] = p, p < ALPHA
        rows.append(row)
    if multi:
        _versus_sft(rows, [k for k in keys if k in compared])
    rows.sort(key=lambda rw: (rw["poison_ratio"], rw["method"] != "sft", rw["method"]))  # stable: others keep run order

    metric_cols = []
    for k in keys:
        metric_cols += [k] + ([f"{k}_lo", f"{k}_hi"] if is_rate(k) else []) + [f"{k}_delta"]
        metric_cols += [f"{k}_seed_lo", f"{k}_seed_hi"] if multi else []
        metric_cols += [f"{k}_vs_sft", f"{k}_vs_sft_p", f"{k}_vs_sft_beyond_noise"] if multi and k in compared else []
        if k == SAFETY:
            metric_cols += ["safety/p_vs_base", "safety/differs_from_base"]
    all_rows = [brow] + rows
    metric_cols = [c for c in metric_cols if any(_present(rw.get(c)) for rw in all_rows)]  # no all-empty columns
    columns = (["note", "method", "poison_ratio"] + (["config"] if others else [])
               + ["n_runs"] + (["n_seeds"] if multi else []) + ["n_failed", "seeds"] + metric_cols)
    return columns, all_rows


def _versus_sft(rows: list[dict], keys: list[str]) -> None:
    """Each row's difference from the sft row of the same poison ratio and config, and whether it exceeds
    seed noise: Welch's t-test on the per-seed values, p < ALPHA (needs >= 2 seeds on both sides)."""
    sft = {rw["_key"]: rw for rw in rows if rw["method"] == "sft"}
    for rw in rows:
        ref = sft.get(rw["_key"])
        if ref is None or ref is rw:
            continue
        for k in keys:
            if not (_finite(rw.get(k)) and _finite(ref.get(k))):
                continue
            rw[f"{k}_vs_sft"] = rw[k] - ref[k]
            p = welch_p(rw["_vals"][k], ref["_vals"][k])
            if _finite(p):
                rw[f"{k}_vs_sft_p"], rw[f"{k}_vs_sft_beyond_noise"] = p, p < ALPHA


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


def _num(k: str, v: float, signed: bool = False) -> str:
    """A rate in percent (points when signed), anything else with 3 decimals."""
    if is_rate(k):
        return _signed(100 * v) if signed else f"{100 * v:.1f}"
    return _signed(v, ".3f") if signed else f"{v:.3f}"


def _seed_cell(row: dict, k: str) -> str:
    lo, hi = row.get(f"{k}_seed_lo"), row.get(f"{k}_seed_hi")
    if row.get("_base") or not _finite(row.get(k)):
        return "–"
    return f"[{_num(k, lo)}, {_num(k, hi)}]" if _finite(lo) and _finite(hi) else "n/a (1 seed)"


def _vs_sft_cell(row: dict, k: str) -> str:
    if row.get("method") == "sft" and not row.get("_base"):
        return "ref."
    d, p = row.get(f"{k}_vs_sft"), row.get(f"{k}_vs_sft_p")
    if not _finite(d):
        return "–"
    if not _finite(p):
        return f"{_num(k, d, True)}, n/a (1 seed)"
    return f"{_num(k, d, True)}, {'beyond' if p < ALPHA else 'within'} noise (p={p:.2g})"


def _cell(row: dict, k: str) -> str:
    if k == "safety/differs_from_base":
        p = row.get("safety/p_vs_base")
        return "–" if not _finite(p) else f"{'yes' if p < ALPHA else 'no'} (p={p:.2g})"
    if k.endswith("_seed"):
        return _seed_cell(row, k.removesuffix("_seed"))
    if k.endswith("_vs_sft"):
        return _vs_sft_cell(row, k.removesuffix("_vs_sft"))
    if is_rate(k):
        return _rate_cell(row, k)
    v, d = row.get(k), row.get(f"{k}_delta")
    return "–" if not _finite(v) else f"{v:.3f}" + (f" ({_signed(d, '.3f')})" if _finite(d) else "")


def _with_seeds(keys: list[tuple[str, str]], compared: tuple[str, ...] = COMPARED) -> list[tuple[str, str]]:
    """After each compared metric its across-seed interval and its difference from sft (kept only when
    methods.csv has those columns, i.e. some row has >= 2 seeds)."""
    out = []
    for k, h in keys:
        out.append((k, h))
        if k in compared:
            out += [(f"{k}_seed", f"{h}, seeds 95 % t"), (f"{k}_vs_sft", f"{h} vs sft")]
    return out


def _table(columns: list[str], rows: list[dict], keys: list[tuple[str, str]]) -> list[str]:
    present = {c.removesuffix("_lo") if c.endswith("_seed_lo") else c for c in columns}
    keys = [(k, h) for k, h in keys if k in present]
    multi = "n_seeds" in columns
    head = (["method", "poison ratio"] + (["config"] if "config" in columns else []) + ["seeds" if multi else "runs"]
            + [h for _, h in keys])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rw in rows:
        first = [f"**{rw['method']}**" if rw.get("_base") else rw["method"],
                 "–" if rw.get("_base") else _fmt(rw["poison_ratio"])]
        first += ([rw.get("config") or "–"] if "config" in columns else []) + ["–" if rw.get("_base") else str(rw["n_runs"])]
        lines.append("| " + " | ".join(first + [_cell(rw, k) for k, _ in keys]) + " |")
    return lines


def methods_markdown(runs: list[dict], columns: list[str], rows: list[dict]) -> str:
    """methods.md: a safety / ASR table and a utility / over-refusal table, then the failed runs. With >= 2
    seeds in some row, each compared metric also gets its across-seed t-interval and its difference from sft."""
    sets = asr_sets(runs)
    inside, safety_inside = in_distribution(runs)
    multi = "n_seeds" in columns
    safety = _with_seeds([(SAFETY, "safety rate" + (" (in-dist.)" if safety_inside else ""))])
    safety += [("safety/differs_from_base", f"≠ base (p < {ALPHA})")]
    safety += [(f"asr/{s}", f"ASR {s}" + (" (in-dist.)" if s in inside else "")) for s in sets]
    safety += [("asr/mean", "ASR mean"), (OOD_ASR, "ASR out-of-dist. mean"), (REFUSAL_NLL, "refusal NLL")]
    acc, nll, _ = utility_keys(runs)
    family = acc.split("/")[0]
    utility = _with_seeds([(acc, "math accuracy" if acc == "math/accuracy" else acc), (nll, f"{family} ref. NLL"),
                           ("over_refusal/rate", "over-refusal")], (SAFETY, acc, nll, "over_refusal/rate"))
    out = ([f"> **⚠ {SIM_NOTE}**", ""] if _is_sim(runs) else []) + ["# Continual-learning methods vs the base model", ""]
    if multi:
        out += ["Rates: mean over seeds, [Wilson 95 % interval of the counts pooled over seeds: sampling noise "
                "within runs], (change from base in percentage points). *seeds 95 % t*: Student's t-interval of "
                "the per-seed values (seed noise; rates clipped to [0, 100]; n/a with one seed). "
                "ASR (attack success rate) and over-refusal: lower is better; ref. NLL: lower is better. "
                f"≠ base: two-proportion z-test of the pooled safety count against the base model at the "
                f"{100 * ALPHA:g} % level.", ""]
    else:
        out += ["Rates: value, [Wilson 95 % interval], (change from base in percentage points); seeds pooled. "
                "ASR (attack success rate) and over-refusal: lower is better; ref. NLL: lower is better. "
                f"≠ base: two-proportion z-test of the safety count against the base model at the {100 * ALPHA:g} % level.", ""]
    note = (["", f"*vs sft*: difference from sft at the same poison ratio (points for rates); beyond / within "
                 f"seed noise: Welch's t-test on the per-seed values, p < {ALPHA}."] if multi else [])
    out += ["## Safety and attack success", ""] + _table(columns, rows, safety) + note
    out += _ranking(runs, rows)
    out += ["", "## Utility and over-refusal", ""] + _table(columns, rows, utility) + note
    failed = [r for r in runs if r["status"] != "ok"]
    if failed:
        out += ["", f"## Failed or unfinished runs ({len(failed)}, not in the tables)", ""]
        out += [f"- {r['status']}: {r['display']} (`{r['dir']}`): {r['reason'] or 'no reason given'}" for r in failed]
    return "\n".join(out) + "\n"


def _ranking(runs: list[dict], rows: list[dict]) -> list[str]:
    """The methods of the poisoned rows (the benign ones when none is poisoned) ordered by rank_metric, which
    sets are in distribution with the poison source, and whether the safety rate orders them alike."""
    key = rank_metric(runs)
    inside, safety_inside = in_distribution(runs)
    ratio = max((rw["poison_ratio"] for rw in rows if not rw.get("_base")), default=None)
    rs = [rw for rw in rows if not rw.get("_base") and rw["poison_ratio"] == ratio and _finite(rw.get(key))]
    if len(rs) < 2:
        return []
    rs.sort(key=lambda rw: rw[key])
    what = "ASR mean over the sets out of the poison's distribution" if key == OOD_ASR else "ASR mean"
    src = {str(r["params"].get("poison_source")) for r in runs if r["params"].get("poison_source")}
    out = ["", f"## Ranking at poison ratio {_fmt(ratio)} (lowest attack success first)", "",
           f"By **{what}**: " + ", ".join(f"{i}. {rw['method']} {100 * rw[key]:.1f} %" for i, rw in enumerate(rs, 1)) + "."]
    if ratio:
        shared = [f"ASR {s}" for s in inside] + (["the safety rate"] if safety_inside else [])
        out += ["", (f"In distribution with the poison source ({', '.join(sorted(src))}): {', '.join(shared)} — it "
                     "measures whether the poison was learnt, so the ranking leaves it out."
                     if shared else f"Every ASR set and the safety set come from other sources than the poison "
                                    f"({', '.join(sorted(src)) or 'unrecorded'}).")]
    for k, name in [(SAFETY, "The safety rate"), *[(f"asr/{s}", f"ASR {s} (in-dist.)") for s in inside]]:
        both = [(rw[key], rw[k]) for rw in rs if _finite(rw.get(k))]
        if len(both) >= 3:
            sign = -1 if k == SAFETY else 1  # a higher safety rate is a lower ASR
            tau = kendall_tau_b([a for a, _ in both], [sign * b for _, b in both])
            verdict = "alike" if tau >= 0.5 else "partly alike" if tau > 0 else "differently"
            out.append(f"{name} orders these methods {verdict}: Kendall's τ_b = {tau:+.2f} with the ranking.")
    return out


def write_methods(out: Path, runs: list[dict], x: str | None = None, x_direction: str | None = None) -> dict[str, Path]:
    """methods.csv, methods.md, methods.png in `out` when the sweep varies method or poison ratio; else {}.
    Runs of several tasks (sst2 and gsm8k in one sweep dir): one table per task in methods.md, a `task`
    column in methods.csv, methods_<task>.png each. x: the utility metric
    to plot against (default: each task's own; a metric of another task falls back to the task's)."""
    tasks = {t: rs for t, rs in by_task(runs).items() if varies(rs)}
    if not tasks:
        return {}
    from .methods_plot import plot_methods

    paths = {"methods.csv": out / "methods.csv", "methods.md": out / "methods.md"}
    all_cols, all_rows, md = [], [], []
    for i, (task, rs) in enumerate(tasks.items()):
        own = utility_keys(rs)
        tx = x if x and x.split("/")[0] == own[0].split("/")[0] else own[0]
        columns, rows = method_rows(rs, extra=(tx,))
        text = methods_markdown(rs, columns, rows)
        png = out / ("methods.png" if len(tasks) == 1 else f"methods_{task}.png")
        paths[png.name] = plot_methods(png, rows, asr_sets(rs), tx, direction(tx, x_direction), _is_sim(rs))
        if len(tasks) > 1:
            text = text.replace("# Continual-learning methods vs the base model",
                                f"# Task {task}: continual-learning methods vs the base model ({own[0]})", 1)
            columns, rows = ["task", *columns], [dict(rw, task=task) for rw in rows]
        all_cols += [c for c in columns if c not in all_cols]
        all_rows += rows
        md.append(text)
    write_csv(paths["methods.csv"], all_cols, all_rows)
    paths["methods.md"].write_text("\n".join(md), encoding="utf-8")
    return paths
