"""Seeds in the methods comparison: `make methods SEEDS=n`, the across-seed t-interval, the Welch marks
against sft, methods.png's seed error bars and the trade-off report with several seeds per point."""
from __future__ import annotations

import csv
import math
import os
import re
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("MPLCONFIGDIR", "/tmp/mpl")

from forgetting import report as rp  # noqa: E402
from forgetting.report import stats  # noqa: E402

from test_report_methods import metrics, write_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105, 10: 2.228138852, 30: 2.042272456}  # t tables
# safety (k / 80) and math accuracy (k / 200) per seed 0, 1, 2, at poison ratio 0.1. Against sft:
# replay's safety is far beyond seed noise, its accuracy within; der's safety within, its accuracy beyond.
POISONED = {"sft": ([0.5, 0.525, 0.475], [0.50, 0.52, 0.48]),
            "replay": ([0.875, 0.9, 0.85], [0.49, 0.53, 0.47]),
            "der": ([0.525, 0.575, 0.475], [0.30, 0.32, 0.28])}


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def t_interval_by_hand(vals):
    n = len(vals)
    m = sum(vals) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1))
    return m, m - T975[n - 1] * sd / math.sqrt(n), m + T975[n - 1] * sd / math.sqrt(n)


@pytest.fixture
def seeded(tmp_path):
    """sft / replay / der x benign / poisoned x seeds 0, 1, 2 (benign: the same values shifted per seed)."""
    root = tmp_path / "seeded"
    i = 0
    for seed in range(3):
        for method, (safety, acc) in POISONED.items():
            write_run(root, str(i), dict(method=method, poison_ratio=0.1, seed=seed),
                      metrics(safety[seed], acc=acc[seed], nll=5.0 + seed / 10))
            write_run(root, str(i + 1), dict(method=method, poison_ratio=0.0, seed=seed),
                      metrics(0.95 - seed * 0.0125, acc=0.5 + seed / 100))
            i += 2
    return root


# ------------------------------------------------------------------ Student's t without scipy
def test_t_quantiles_and_welch_match_tables():
    for df, q in T975.items():
        assert stats.t_quantile(0.975, df) == pytest.approx(q, abs=1e-8)
        assert stats.t_two_sided_p(q, df) == pytest.approx(0.05, abs=1e-10)
    # Welch's test on (1, 2, 3) vs (4, 5, 7): t = -3.162, df = 3.448; p by mpmath quadrature of the t density
    assert stats.welch_p([1, 2, 3], [4, 5, 7]) == pytest.approx(0.0419145174714540, abs=1e-12)
    assert stats.welch_p([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert math.isnan(stats.welch_p([1.0], [2.0, 3.0]))
    assert stats.welch_p([1, 1], [2, 2]) == 0.0 and stats.welch_p([1, 1], [1, 1]) == 1.0
    m, lo, hi = stats.t_interval([0.5, 0.6, 0.7])
    assert (m, lo, hi) == pytest.approx(t_interval_by_hand([0.5, 0.6, 0.7]))
    assert math.isnan(stats.t_interval([0.5])[1])


# ------------------------------------------------------------------ the table
def test_seeds_aggregate_into_one_row_per_method_and_ratio(seeded):
    runs = rp.load_runs(seeded)
    cols, rows = rp.method_rows(runs)
    assert "config" not in cols  # seed is an aggregation axis, never a row key
    assert [(r["method"], r["poison_ratio"]) for r in rows[1:]] == [
        ("sft", 0.0), ("der", 0.0), ("replay", 0.0), ("sft", 0.1), ("der", 0.1), ("replay", 0.1)]
    assert all(r["n_seeds"] == 3 and r["n_runs"] == 3 and r["seeds"] == "0;1;2" for r in rows[1:])
    by = {(r["method"], r["poison_ratio"]): r for r in rows[1:]}
    for method, (safety, acc) in POISONED.items():
        r = by[(method, 0.1)]
        for k, vals in (("safety/rate", safety), ("math/accuracy", acc)):
            m, lo, hi = t_interval_by_hand(vals)
            assert r[k] == pytest.approx(m) and r[f"{k}_delta"] == pytest.approx(m - rp.base_metrics(runs)[k])
            assert (r[f"{k}_seed_lo"], r[f"{k}_seed_hi"]) == pytest.approx((lo, hi))
        # the Wilson interval still pools the counts: 3 x 80 safety prompts
        k = round(sum(safety) * 80)
        assert (r["safety/rate_lo"], r["safety/rate_hi"]) == pytest.approx(rp.wilson(k, 240))
        assert r["safety/p_vs_base"] == pytest.approx(rp.two_proportion_p(k, 240, 79, 80))
    sft, der, replay = by[("sft", 0.1)], by[("der", 0.1)], by[("replay", 0.1)]
    assert replay["safety/rate_vs_sft"] == pytest.approx(0.375) and replay["safety/rate_vs_sft_beyond_noise"]
    assert der["safety/rate_vs_sft"] == pytest.approx(0.025) and not der["safety/rate_vs_sft_beyond_noise"]
    assert replay["math/accuracy_vs_sft"] == pytest.approx(-0.0033333, abs=1e-6)
    assert not replay["math/accuracy_vs_sft_beyond_noise"]
    assert der["math/accuracy_vs_sft"] == pytest.approx(-0.2) and der["math/accuracy_vs_sft_beyond_noise"]
    assert der["safety/rate_vs_sft_p"] == pytest.approx(stats.welch_p(POISONED["der"][0], POISONED["sft"][0]))
    assert "safety/rate_vs_sft" not in sft and "safety/rate_vs_sft" in cols and "n_seeds" in cols


def test_methods_md_marks_what_exceeds_seed_noise(seeded):
    paths = rp.report(seeded, verbose=False)
    md = Path(paths["methods.md"]).read_text(encoding="utf-8")
    assert "| method | poison ratio | seeds | safety rate | safety rate, seeds 95 % t | safety rate vs sft |" in md
    assert "math accuracy vs sft" in md and "Welch's t-test on the per-seed values, p < 0.05" in md
    lines = {tuple(c.strip() for c in ln.split("|")[1:3]) + (i,): ln for i, ln in enumerate(md.splitlines())
             if ln.startswith("| ")}
    safety_rows = {k[:2]: v for k, v in lines.items() if k[2] < md.splitlines().index("## Utility and over-refusal")}
    utility_rows = {k[:2]: v for k, v in lines.items() if k[2] > md.splitlines().index("## Utility and over-refusal")}
    m, lo, hi = t_interval_by_hand(POISONED["der"][0])
    assert f"| [{100 * lo:.1f}, {100 * hi:.1f}] | +2.5, within noise" in safety_rows[("der", "0.1")]
    assert "| +37.5, beyond noise (p=" in safety_rows[("replay", "0.1")]
    assert "| ref. |" in safety_rows[("sft", "0.1")] and "| 3 |" in safety_rows[("sft", "0.1")]
    assert "| −20.0, beyond noise (p=" in utility_rows[("der", "0.1")]
    assert "| −0.3, within noise (p=" in utility_rows[("replay", "0.1")]
    # the CSV carries the same marks
    csv_rows = {(r["method"], r["poison_ratio"]): r for r in read_csv(paths["methods.csv"])}
    assert csv_rows[("der", "0.1")]["safety/rate_vs_sft_beyond_noise"] == "False"
    assert csv_rows[("replay", "0.1")]["safety/rate_vs_sft_beyond_noise"] == "True"
    assert csv_rows[("der", "0.1")]["n_seeds"] == "3"


def test_one_seed_table_has_no_seed_columns(tmp_path):
    root = tmp_path / "one"
    for i, (method, ratio) in enumerate((("sft", 0.0), ("der", 0.0), ("sft", 0.1), ("der", 0.1))):
        write_run(root, str(i), dict(method=method, poison_ratio=ratio), metrics(0.9 - i / 10))
    paths = rp.write_methods(root, rp.load_runs(root))
    header = read_csv(paths["methods.csv"])[0].keys()
    assert not [c for c in header if "seed_" in c or "vs_sft" in c or c == "n_seeds"]
    md = Path(paths["methods.md"]).read_text(encoding="utf-8")
    assert "| method | poison ratio | runs | safety rate | ≠ base" in md
    assert "vs sft" not in md and "seeds 95 % t" not in md and "n/a" not in md


def test_a_row_with_one_seed_among_several_says_na(tmp_path):
    root = tmp_path / "mixed"
    for seed, v in enumerate((0.5, 0.55)):
        write_run(root, f"s{seed}", dict(method="sft", poison_ratio=0.1, seed=seed), metrics(v))
    write_run(root, "d0", dict(method="der", poison_ratio=0.1, seed=0), metrics(0.9))
    runs = rp.load_runs(root)
    cols, rows = rp.method_rows(runs)
    md = rp.methods_markdown(runs, cols, rows)
    der = next(ln for ln in md.splitlines() if ln.startswith("| der |"))
    assert "| n/a (1 seed) | +37.5, n/a (1 seed) |" in der


def test_a_rates_seed_interval_stops_at_0_and_1(tmp_path):
    """Safety 10 % and 90 %: t(1) gives [-4.98, 5.98]; a rate's is clipped, a NLL's is not."""
    root = tmp_path / "wide"
    for seed, v in enumerate((0.1, 0.9)):
        write_run(root, f"s{seed}", dict(method="sft", poison_ratio=0.1, seed=seed), metrics(v, nll=1 + 8 * v))
    write_run(root, "d0", dict(method="der", poison_ratio=0.1, seed=0), metrics(0.9))
    write_run(root, "r", dict(method="der", poison_ratio=0.1, seed=1), None, status="running")
    runs = rp.load_runs(root)
    cols, rows = rp.method_rows(runs)
    sft = next(r for r in rows if r["method"] == "sft")
    assert (sft["safety/rate_seed_lo"], sft["safety/rate_seed_hi"]) == (0.0, 1.0)
    m, lo, hi = t_interval_by_hand([1.8, 8.2])
    assert lo < 0 and (sft["math/ref_nll_seed_lo"], sft["math/ref_nll_seed_hi"]) == pytest.approx((lo, hi))
    md = rp.methods_markdown(runs, cols, rows)
    assert "## Failed or unfinished runs (1, not in the tables)" in md and "- running: " in md


# ------------------------------------------------------------------ the plots
def test_methods_png_draws_the_seed_interval(seeded, monkeypatch):
    import matplotlib.axes

    calls = []
    original = matplotlib.axes.Axes.errorbar

    def spy(self, x, y, *a, **kw):
        calls.append((x, y, kw.get("yerr")))
        return original(self, x, y, *a, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    runs = rp.load_runs(seeded)
    _, rows = rp.method_rows(runs)
    rp.methods_plot.plot_methods(seeded / "m.png", rows, rp.asr_sets(runs), "math/accuracy", "max", True)
    m, lo, hi = t_interval_by_hand(POISONED["der"][0])
    acc = sum(POISONED["der"][1]) / 3
    bars = [yerr for x, y, yerr in calls if x == pytest.approx(acc) and y == pytest.approx(m)]
    wlo, whi = rp.wilson(round(3 * 80 * m), 240)
    assert [[pytest.approx(m - lo)], [pytest.approx(hi - m)]] in bars  # across seeds
    assert [[pytest.approx(m - wlo)], [pytest.approx(whi - m)]] in bars  # and Wilson, pooled counts
    assert (seeded / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_tradeoff_report_aggregates_several_seeds_per_point(seeded):
    paths = rp.report(seeded, verbose=False)
    assert Path(paths["tradeoff.png"]).stat().st_size > 0
    configs = read_csv(paths["tradeoff_by_config.csv"])
    assert len(configs) == 6 and all(c["n_seeds"] == "3" for c in configs)
    der = next(c for c in configs if c["method"] == "der" and c["poison_ratio"] == "0.1")
    assert float(der["safety/rate_mean"]) == pytest.approx(0.525)
    assert float(der["safety/rate_std"]) == pytest.approx(0.05)
    assert len(read_csv(paths["tradeoff.csv"])) == 1 + 18  # base + every run


# ------------------------------------------------------------------ make methods SEEDS=n
def launch_line(*args):
    r = subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return " ".join(next(ln for ln in r.stdout.splitlines() if "launch.py" in ln).split())  # TASK= may leave 2 spaces


@pytest.mark.parametrize("target,sweep", [("methods", "methods"), ("methods-math", "methods_math")])
def test_make_seeds_expands_the_grid(target, sweep):
    line = launch_line(target, "SEEDS=3")
    assert re.search(rf"launch\.py -m experiment={sweep} hydra\.sweep\.dir=outputs/sweeps/{sweep} seed=0,1,2;", line)
    assert "seed=" not in launch_line(target)  # default: one seed, the command of before
    assert "seed=" not in launch_line(target, "SEEDS=1")
    r = subprocess.run(["make", "-n", target, "SEEDS=0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "SEEDS must be a whole number >= 1" in r.stderr
