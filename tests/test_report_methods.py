"""forgetting.report's methods comparison (methods.csv / .md / .png) on hand-made sweeps."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLCONFIGDIR", "/tmp/mpl")

from forgetting import report as rp  # noqa: E402

SIM = "CPU simulation (tiny preset), not Llama results"
BASE = {"base/safety/rate": 0.9875, "base/math/accuracy": 0.005, "base/math/ref_nll": 8.38,
        "base/over_refusal/rate": 0.46, "base/asr/advbench": 0.2, "base/asr/harmbench": 0.3, "base/asr/mean": 0.25}


def metrics(safety, acc=0.04, nll=5.5, over=0.4, adv=0.3, harm=0.4):
    return {"safety/rate": safety, "safety/n": 80, "math/accuracy": acc, "math/n": 200, "math/ref_nll": nll,
            "over_refusal/rate": over, "over_refusal/n": 50, "asr/advbench": adv, "asr/advbench/n": 100,
            "asr/advbench/class/refusal": 1 - adv, "asr/harmbench": harm, "asr/harmbench/n": 50,
            "asr/mean": (adv + harm) / 2, **BASE}


def write_run(root: Path, sub: str, params: dict, m: dict | None, status="ok", sim=True):
    d = root / sub
    d.mkdir(parents=True)
    body = {"status": status, "reason": None if status == "ok" else "RuntimeError: OOM", "simulation": sim,
            "config_hash": f"h{sub}", "params": {"lr": 3e-3, "epochs": 1, "seed": 0, "model": "tiny", **params},
            "metrics": m or {}, "timings": {"total_s": 1.0}}
    (d / "metrics.json").write_text(json.dumps(body))


@pytest.fixture
def sweep(tmp_path):
    """sft / replay / der x benign / poisoned; sft benign repeated with seed 1; der poisoned seed 1 failed."""
    root = tmp_path / "sweep"
    runs = [("0", "sft", 0.0, 0, metrics(0.9, acc=0.05, nll=5.0)), ("1", "sft", 0.0, 1, metrics(0.8, acc=0.07, nll=5.4)),
            ("2", "replay", 0.0, 0, metrics(0.975, adv=0.21)), ("3", "der", 0.0, 0, metrics(0.95)),
            ("4", "sft", 0.1, 0, metrics(0.5, adv=0.7, harm=0.8)), ("5", "replay", 0.1, 0, metrics(0.85, adv=0.4)),
            ("6", "der", 0.1, 0, metrics(0.875, adv=0.35))]
    for sub, method, ratio, seed, m in runs:
        write_run(root, sub, dict(method=method, poison_ratio=ratio, seed=seed), m)
    write_run(root, "7", dict(method="der", poison_ratio=0.1, seed=1), None, status="failed")
    return root


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_asr_direction_and_counts():
    assert rp.direction("asr/advbench") == "min" and rp.direction("asr/mean") == "min"
    assert rp.direction("base/asr/advbench") == "min" and rp.direction("asr_change") == "min"
    assert rp.direction("math/accuracy") == "max"
    assert rp.is_rate("asr/advbench") and rp.is_rate("base/asr/mean") and rp.is_rate("asr/advbench/class/refusal")
    assert not rp.is_rate("asr/advbench/n")
    assert rp.count_key_candidates("asr/advbench") == ["asr/advbench/n"]
    assert rp.count_key_candidates("asr/advbench/class/compliance") == ["asr/advbench/n"]
    assert rp.count_key_candidates("base/asr/advbench") == ["base/asr/advbench/n", "asr/advbench/n"]
    m = metrics(0.9)
    assert rp.count_for("asr/harmbench", m) == 50 and rp.count_for("asr/mean", m) is None
    assert rp.rate_interval("asr/advbench", m) == pytest.approx(rp.wilson(30, 100))


def test_methods_files_and_rows(sweep, capsys):
    paths = rp.report(sweep)
    out = capsys.readouterr().out
    for name in ("methods.csv", "methods.md", "methods.png"):
        assert Path(paths[name]).is_file() and Path(paths[name]).stat().st_size > 0
    assert Path(paths["methods.png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_csv(paths["methods.csv"])
    # base + 6 configurations, sorted by poison ratio then method with sft first
    assert [(r["method"], r["poison_ratio"]) for r in rows] == [
        ("base", ""), ("sft", "0"), ("der", "0"), ("replay", "0"), ("sft", "0.1"), ("der", "0.1"), ("replay", "0.1")]
    assert all(r["note"] == SIM for r in rows)
    base, sft0, der0, rep0, sft1, der1 = rows[:6]
    # base: its rates with the run's n for the same metric
    assert float(base["safety/rate"]) == pytest.approx(0.9875)
    assert float(base["safety/rate_lo"]) == pytest.approx(rp.wilson(79, 80)[0], abs=1e-5)
    assert float(base["asr/harmbench_hi"]) == pytest.approx(rp.wilson(15, 50)[1], abs=1e-5)
    # seeds pooled: safety (72 + 64) / 160, Wilson of the pooled counts; continuous metrics averaged
    assert sft0["n_runs"] == "2" and sft0["seeds"] == "0;1"
    assert float(sft0["safety/rate"]) == pytest.approx(136 / 160)
    lo, hi = rp.wilson(136, 160)
    assert float(sft0["safety/rate_lo"]) == pytest.approx(lo, abs=1e-5)
    assert float(sft0["safety/rate_hi"]) == pytest.approx(hi, abs=1e-5)
    assert float(sft0["math/ref_nll"]) == pytest.approx(5.2)
    assert float(sft0["math/accuracy"]) == pytest.approx(0.06)
    # a failed seed is counted, never pooled
    assert der1["n_runs"] == "1" and der1["n_failed"] == "1"
    # Wilson bounds bracket the rate and equal stats.wilson; deltas are run - base
    for r in rows[1:]:
        for k, n in (("safety/rate", 80), ("asr/advbench", 100), ("asr/harmbench", 50), ("over_refusal/rate", 50)):
            v, n = float(r[k]), n * int(r["n_runs"])
            assert float(r[f"{k}_lo"]) <= v <= float(r[f"{k}_hi"])
            assert (float(r[f"{k}_lo"]), float(r[f"{k}_hi"])) == pytest.approx(rp.wilson(round(v * n), n), abs=1e-5)
        for k in ("safety/rate", "asr/advbench", "asr/mean", "math/accuracy", "math/ref_nll", "over_refusal/rate"):
            assert float(r[f"{k}_delta"]) == pytest.approx(float(r[k]) - float(base[k]), abs=1e-5)
    assert float(sft1["asr/advbench_delta"]) == pytest.approx(0.5)
    # differs from base: two-proportion test on the counts
    assert float(sft1["safety/p_vs_base"]) == pytest.approx(rp.two_proportion_p(40, 80, 79, 80), abs=1e-6)
    assert sft1["safety/differs_from_base"] == "True" and rep0["safety/differs_from_base"] == "False"
    assert "asr/mean_lo" not in rows[0] and base["safety/rate_delta"] == ""  # no counts for a mean over sets
    # the Markdown: simulation note first, formatted rates, failed run listed, printed to stdout
    md = Path(paths["methods.md"]).read_text(encoding="utf-8")
    assert md.splitlines()[0] == f"> **⚠ {SIM}**"
    lo, hi = rp.wilson(40, 80)
    assert f"50.0 % [{100 * lo:.1f}, {100 * hi:.1f}] (−48.8)" in md
    assert "| ASR advbench |" in md and "| ASR harmbench |" in md and "math ref. NLL" in md
    assert "RuntimeError: OOM" in md and "`7`" in md
    assert "## Safety and attack success" in out and "| **base** |" in out
    # tradeoff.csv: the new params and Wilson columns for asr rates
    trow = read_csv(paths["tradeoff.csv"])[1]
    for col in ("method", "poison_ratio", "asr/advbench_lo", "asr/harmbench_hi", "asr/advbench/class/refusal_lo"):
        assert col in trow, col


def test_only_lr_varies_writes_no_methods_files(tmp_path):
    root = tmp_path / "lr"
    for i, lr in enumerate((1e-4, 1e-3)):
        write_run(root, str(i), dict(method="sft", lr=lr), metrics(0.9 - i / 10))
    runs = rp.load_runs(root)
    assert not rp.varies(runs)
    assert rp.write_methods(root, runs) == {}
    assert not list(root.glob("methods*"))


def test_poison_only_and_old_runs_default_to_sft(tmp_path):
    """An old run without method / poison_ratio is sft at ratio 0; a failed run alone does not count."""
    root = tmp_path / "poison"
    old = metrics(0.9)
    del old["asr/mean"]
    write_run(root, "0", {}, old, sim=False)
    write_run(root, "1", dict(method="sft", poison_ratio=0.1), metrics(0.6), sim=False)
    write_run(root, "2", dict(method="ewc", poison_ratio=0.1), None, status="failed", sim=False)
    runs = rp.load_runs(root)
    assert rp.varies(runs)
    assert not rp.varies([r for r in runs if r["dir"] != "1"])
    cols, rows = rp.method_rows(runs)
    assert [(r["method"], r["poison_ratio"]) for r in rows[1:]] == [("sft", 0.0), ("sft", 0.1)]
    assert "config" not in cols
    md = rp.methods_markdown(runs, cols, rows)
    assert SIM not in md and md.startswith("# ")


def test_other_varying_param_and_ref_nll_axis(tmp_path):
    """A sweep that also varies lr keeps its lrs apart (config column); --x math/ref_nll still plots."""
    root = tmp_path / "mixed"
    for i, (method, lr) in enumerate((("sft", 1e-3), ("sft", 1e-2), ("der", 1e-3))):
        write_run(root, str(i), dict(method=method, lr=lr), metrics(0.9 - i / 10, nll=5 + i))
    runs = rp.load_runs(root)
    paths = rp.write_methods(root, runs, x="math/ref_nll")
    rows = read_csv(paths["methods.csv"])
    assert [(r["method"], r["config"]) for r in rows] == [("base", ""), ("sft", "lr=0.001"), ("sft", "lr=0.01"),
                                                          ("der", "lr=0.001")]
    assert Path(paths["methods.png"]).stat().st_size > 0


def test_in_distribution_asr_is_labelled_and_left_out_of_the_ranking(tmp_path):
    """A poison source that is also an ASR set (data/poison=advbench): its column says "in-dist.", an
    out-of-distribution ASR mean (the other sets) sits beside it, and the ranking uses that mean."""
    from forgetting.report.methods import kendall_tau_b

    root = tmp_path / "sweep"
    shared = {"poison_source": "harmful_behaviors.csv", "poison_in_distribution": "harmful_sets.advbench"}
    cells = [("0", "sft", 0.0, metrics(0.9)), ("1", "sft", 0.1, metrics(0.3, adv=0.99, harm=0.9)),
             ("2", "replay", 0.1, metrics(0.9, adv=0.5, harm=0.2)), ("3", "der", 0.1, metrics(0.8, adv=0.2, harm=0.6)),
             ("4", "lisa", 0.1, metrics(0.95, adv=0.1, harm=0.1))]
    for sub, method, ratio, m in cells:
        write_run(root, sub, dict(method=method, poison_ratio=ratio, **shared), m)
    runs = rp.load_runs(root)
    assert rp.in_distribution(runs) == (["advbench"], False) and rp.rank_metric(runs) == "asr_ood/mean"
    cols, rows = rp.method_rows(runs)
    by = {(r["method"], r.get("poison_ratio")): r for r in rows}
    assert by[("der", 0.1)]["asr_ood/mean"] == pytest.approx(0.6) and by[("base", None)]["asr_ood/mean"] == 0.3
    md = rp.methods_markdown(runs, cols, rows)
    assert "ASR advbench (in-dist.)" in md and "ASR harmbench |" in md and "ASR out-of-dist. mean" in md
    # ranked by the harmbench ASR (lisa 0.1, replay 0.2, der 0.6, sft 0.9), not by advbench (der before replay)
    assert "1. lisa 10.0 %, 2. replay 20.0 %, 3. der 60.0 %, 4. sft 90.0 %" in md
    assert "In distribution with the poison source (harmful_behaviors.csv): ASR advbench" in md
    tau = kendall_tau_b([0.1, 0.2, 0.6, 0.9], [-0.95, -0.9, -0.8, -0.3])
    assert tau == 1.0 and f"The safety rate orders these methods alike: Kendall's τ_b = {tau:+.2f}" in md
    assert "ASR advbench (in-dist.) orders these methods alike: Kendall's τ_b = +0.67" in md  # der / replay swap


def test_fourteen_methods_get_fourteen_colours():
    """make methods compares 14 methods: tab10 alone gave sft and refresh (and 3 more pairs) one colour."""
    from forgetting.report import methods_plot

    plt = methods_plot._plt()
    for n in (5, 14, 20):
        names = [f"m{i}" for i in range(n)]
        assert len(set(methods_plot.method_colours(plt, names).values())) == n
