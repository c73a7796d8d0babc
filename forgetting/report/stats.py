"""Statistics: Wilson intervals, the two-proportion test, Pareto fronts, seed mean / std, rate counts."""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

from ..errors import ConfigError

ALPHA = 0.05  # significance level of the "differs from base" test


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
    """'max' or 'min'. Metrics ending in nll / loss (and *_drop, over_refusal/*, asr/*, asr_change) are minimised."""
    if override:
        if override not in ("max", "min"):
            raise ConfigError(f"direction must be 'max' or 'min', got {override!r}")
        return override
    m = metric.lower().removeprefix("base/")
    if m.endswith(("nll", "loss", "_drop")) or m.startswith(("over_refusal/", "asr/", "asr_")):
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
SHARES = ("accuracy", "rate", "pass@1", "exact_match", "contains")  # <family>/<share>[_public|_private]: a rate


def is_rate(key: str) -> bool:
    """<task>/accuracy* (pass@1*, exact_match*, contains*), <family>/rate*, <family>/class/<c>, asr/<set>, asr/<set>/class/<c> (also with a
    base/ prefix). Not accuracy_gain, asr/<set>/n etc."""
    parts = (key[5:] if key.startswith("base/") else key).split("/")
    if parts[0] == "asr":
        return len(parts) == 2 or (len(parts) == 4 and parts[2] == "class")
    return len(parts) >= 2 and (parts[1].startswith(SHARES) or parts[1] == "class")


def count_key_candidates(key: str) -> list[str]:
    """Where the count n of a rate lives, most specific first.

    safety/rate -> safety/n; safety/rate_public -> safety/n_public, then safety/n;
    safety/class/refusal -> safety/n; asr/<set> and asr/<set>/class/<c> -> asr/<set>/n;
    safety/rate/cse -> safety/n/cse only (the overall n would
    understate the uncertainty of a sub-group, so no fallback there); base/x -> base/<n>, then <n>."""
    base = key.startswith("base/")
    parts = (key[5:] if base else key).split("/")
    family, second, rest = parts[0], parts[1], parts[2:]
    if family == "asr":
        cands = [f"asr/{second}/n"]
    elif second == "class":
        cands = [f"{family}/n"]
    else:
        suffix = re.sub(r"^(" + "|".join(map(re.escape, SHARES)) + ")", "", second)
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
    if not is_rate(key) or not _finite(v) or n is None or not 0 <= v <= 1:
        return (math.nan, math.nan)
    return wilson(round(v * n), n)


# ------------------------------------------------------------------ Student's t (scipy is not a dependency)
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, as in Numerical Recipes)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d, c = 1 + num * d, 1 + num / c
            d, c = 1 / (d if abs(d) > tiny else tiny), (c if abs(c) > tiny else tiny)
            h *= d * c
        if abs(d * c - 1) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df (> 0, need not be whole) degrees of freedom."""
    return _betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
    """The q quantile (q > 0.5) of Student's t, by bisection on t_two_sided_p."""
    lo, hi, target = 0.0, 1e7, 2 * (1 - q)
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_two_sided_p(mid, df) > target else (lo, mid)
    return (lo + hi) / 2


def t_interval(vals: Sequence[float], level: float = 1 - ALPHA) -> tuple[float, float, float]:
    """(mean, lo, hi): the t-interval of the mean of `vals` (e.g. one value per seed); NaN bounds for < 2."""
    m, s = _mean_std(vals)
    if not _finite(s):
        return (m, math.nan, math.nan)
    half = t_quantile(1 - (1 - level) / 2, len(vals) - 1) * s / math.sqrt(len(vals))
    return (m, m - half, m + half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances); NaN when a side has < 2 values.
    No spread on either side: 1 when the means are equal, else 0 (a difference no seed moved)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    (ma, sa), (mb, sb) = _mean_std(a), _mean_std(b)
    va, vb = sa * sa / len(a), sb * sb / len(b)
    if va + vb == 0:
        return 1.0 if ma == mb else 0.0
    df = (va + vb) ** 2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    return t_two_sided_p((ma - mb) / math.sqrt(va + vb), df)
