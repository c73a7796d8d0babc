"""What gets one marker in tradeoff.png (a run, or a config's seeds aggregated) and its noise test vs base."""
from __future__ import annotations

import math

from .runs import _counts_only, _ordered_union, _without_seed
from .stats import ALPHA, _finite, _mean_std, count_for, is_rate, rate_interval, two_proportion_p


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
            u["label"], u["metrics"] = (r["display"] if not aggregate else _without_seed(r["label"])), dict(r["metrics"])
            for k, v in r["metrics"].items():
                if is_rate(k):
                    lo, hi = rate_interval(k, r["metrics"])
                    if _finite(lo):
                        u["bounds"][k] = (lo, hi, "wilson")
        else:
            u["label"] = _without_seed(rs[0]["label"])
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
