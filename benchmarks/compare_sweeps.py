"""Before / after per (method, poison ratio) for two method sweeps with seeds (e.g. the same `make methods-math
SEEDS=3` at two commits): mean over seeds ± the half-width of the 95 % t-interval across seeds, per metric.
    python benchmarks/compare_sweeps.py outputs/sweeps/methods_math_old outputs/sweeps/methods_math"""
import argparse
import json
import statistics
from pathlib import Path

from forgetting.report.stats import t_interval

KEYS = ("safety/rate", "safety/refusal_nll", "math/accuracy", "asr/advbench", "over_refusal/rate")
RAW = {"safety/refusal_nll"}  # not a rate: printed as is (lower = the base's refusals better kept)


def load(d: Path) -> dict:
    cells: dict = {}
    for f in d.glob("*/metrics.json"):
        m = json.loads(f.read_text())
        if m["status"] == "ok":
            cells.setdefault((m["params"]["method"], float(m["params"]["poison_ratio"])), []).append(m["metrics"])
    return cells


def cell(vals: list[float], scale: float = 100, digits: int = 1) -> str:
    if not vals:
        return "—"
    if len(vals) < 2:
        return f"{scale * vals[0]:.{digits}f} (1 seed)"
    _, lo, hi = t_interval(vals)
    return f"{scale * statistics.mean(vals):.{digits}f} ± {scale * (hi - lo) / 2:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    a = ap.parse_args()
    before, after = load(a.before), load(a.after)
    rows = sorted(set(before) | set(after), key=lambda k: (k[1], k[0] != "sft", k[0]))
    for key in KEYS:
        scale, digits, unit = (1, 3, "") if key in RAW else (100, 1, "%; ")
        print(f"\n**{key}** ({unit}mean ± 95 % t half-width over seeds)\n\n| method | poison | before | after | seeds |")
        print("|---|---|---|---|---|")
        for m, r in rows:
            vb, va = ([x[key] for x in s.get((m, r), []) if key in x] for s in (before, after))
            print(f"| {m} | {r:g} | {cell(vb, scale, digits)} | {cell(va, scale, digits)} | {len(vb)} / {len(va)} |")


if __name__ == "__main__":
    main()
