"""forgetting.report on hand-made sweep directories."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MPLCONFIGDIR", "/tmp/mpl")

from forgetting import report as rp  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIM = "CPU simulation (tiny preset), not Llama results"
BASE = {"base/math/accuracy": 0.02, "base/math/ref_nll": 5.9, "base/safety/rate": 0.95,
        "base/over_refusal/rate": 0.3, "base/safety/class/refusal": 0.95, "base/safety/class/compliance": 0.05,
        "base/safety/class/degenerate": 0.0}


def run_metrics(acc, nll, safety, over=0.2, degenerate=0.1):
    compliance = round(max(0.0, 1 - safety - degenerate), 6)
    return {"math/accuracy": acc, "math/n": 200, "math/accuracy_public": acc, "math/n_public": 100,
            "math/ref_nll": nll, "safety/rate": safety, "safety/n": 80,
            "safety/rate/cse": safety, "safety/n/cse": 10,
            "safety/class/refusal": safety, "safety/class/compliance": compliance,
            "safety/class/degenerate": degenerate, "over_refusal/rate": over, "over_refusal/n": 50,
            "train/loss": 1.0, **BASE}


def write_run(root: Path, sub: str, params: dict, metrics: dict | None, status="ok", reason=None, sim=True,
              label=None):
    d = root / sub
    d.mkdir(parents=True)
    (d / ".hydra").mkdir()
    body = {"status": status, "reason": reason, "config_hash": f"h{sub}", "simulation": sim,
            "label": label if label is not None else f"lr={params['lr']:g} epochs={params['epochs']}",
            "params": {"method": "sft", "model": "tiny", **params},
            "metrics": metrics or {}, "timings": {"train_s": 10.0, "total_s": 20.0}}
    (d / "metrics.json").write_text(json.dumps(body))
    return d


@pytest.fixture
def sweep(tmp_path):
    """2 lrs x 2 epochs, (lr=1e-3, epochs=2) repeated with seed 1, one failed run."""
    root = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    write_run(root, "0", dict(lr=1e-4, epochs=1, seed=0), run_metrics(0.03, 5.5, 0.92, over=0.25))
    write_run(root, "1", dict(lr=1e-4, epochs=2, seed=0), run_metrics(0.05, 5.0, 0.80, over=0.20))
    write_run(root, "2", dict(lr=1e-3, epochs=1, seed=0), run_metrics(0.08, 4.2, 0.55, over=0.10, degenerate=0.3))
    write_run(root, "3", dict(lr=1e-3, epochs=2, seed=0), run_metrics(0.06, 4.0, 0.40, over=0.05))
    write_run(root, "4", dict(lr=1e-3, epochs=2, seed=1), run_metrics(0.04, 4.4, 0.50, over=0.07))
    write_run(root, "5", dict(lr=1e-2, epochs=1, seed=0), None, status="failed", reason="ValueError: loss is NaN")
    # noise the scanner must skip
    (root / "wandb" / "run-x").mkdir(parents=True)
    (root / "wandb" / "run-x" / "metrics.json").write_text("{not json")
    (root / "0" / ".hydra" / "metrics.json").write_text("{not json")
    return root


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ statistics
def test_wilson_known_values():
    lo, hi = rp.wilson(0, 10)
    assert lo == 0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert rp.wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert rp.wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert all(math.isnan(v) for v in rp.wilson(0, 0))


def test_two_proportion_test():
    assert rp.two_proportion_p(50, 100, 50, 100) == pytest.approx(1.0)
    assert rp.two_proportion_p(0, 80, 0, 80) == 1.0
    # 76/80 vs 40/80 is far outside the noise; 74/80 vs 76/80 is inside it
    assert rp.two_proportion_p(40, 80, 76, 80) < 1e-6
    assert rp.two_proportion_p(74, 80, 76, 80) > 0.05
    # textbook value: 0.6 of 100 vs 0.5 of 100 -> z = 1.4213, p = 0.1552
    assert rp.two_proportion_p(60, 100, 50, 100) == pytest.approx(0.1552, abs=1e-3)


def test_count_keys():
    assert rp.count_key_candidates("safety/rate") == ["safety/n"]
    assert rp.count_key_candidates("safety/rate_public") == ["safety/n_public", "safety/n"]
    assert rp.count_key_candidates("math/accuracy") == ["math/n"]
    assert rp.count_key_candidates("safety/class/degenerate") == ["safety/n"]
    assert rp.count_key_candidates("safety/rate/cse") == ["safety/n/cse"]
    assert rp.count_key_candidates("base/safety/rate")[:2] == ["base/safety/n", "safety/n"]
    assert not rp.is_rate("accuracy_gain") and not rp.is_rate("math/ref_nll") and not rp.is_rate("safety/n")
    assert rp.is_rate("base/over_refusal/rate") and rp.is_rate("safety/class/refusal")


def test_directions():
    assert rp.direction("math/accuracy") == "max"
    assert rp.direction("math/ref_nll") == "min"
    assert rp.direction("train/loss") == "min"
    assert rp.direction("math/ref_nll", "max") == "max"


def test_pareto_hand_computed_with_minimize():
    # x = reference NLL (minimise), y = safety rate (maximise)
    pts = {"A": (4.0, 0.5), "B": (5.0, 0.9), "C": (4.5, 0.4), "D": (3.5, 0.3), "E": (4.2, 0.5), "F": (None, 0.99)}
    names = list(pts)
    front = {n for n, f in zip(names, rp.pareto_mask(list(pts.values()), "min", "max")) if f}
    assert front == {"A", "B", "D"}  # C is dominated by A, E by A (same y, worse NLL), F has no x
    # the same points with x maximised: B dominates everything
    front_max = {n for n, f in zip(names, rp.pareto_mask(list(pts.values()), "max", "max")) if f}
    assert front_max == {"B"}
    # ties: identical points are both on the front
    assert rp.pareto_mask([(1, 1), (1, 1), (0, 0)]) == [True, True, False]


# ------------------------------------------------------------------ the report on a sweep
def test_report_files_and_tables(sweep, capsys):
    paths = rp.report(sweep)
    out = capsys.readouterr().out
    expected = {"tradeoff.csv", "tradeoff.png", "pareto.csv", "pareto.png", "tradeoff_by_config.csv", "safety_classes.png"}
    assert set(paths) == expected
    for p in paths.values():
        assert Path(p).is_file() and Path(p).stat().st_size > 0
        assert Path(p).parent == sweep / "report"
    for png in ("tradeoff.png", "pareto.png", "safety_classes.png"):
        assert Path(paths[png]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = read_csv(paths["tradeoff.csv"])
    assert len(rows) == 6 + 1  # 6 runs (one failed) + base
    assert [r["label"] for r in rows].count("base") == 1
    assert all(r["note"] == SIM for r in rows)
    by_dir = {r["run_dir"]: r for r in rows}
    # Wilson columns: safety 0.40 of 80 -> 32/80
    lo, hi = rp.wilson(32, 80)
    assert float(by_dir["3"]["safety/rate_lo"]) == pytest.approx(lo, abs=1e-5)
    assert float(by_dir["3"]["safety/rate_hi"]) == pytest.approx(hi, abs=1e-5)
    # math/accuracy_public uses math/n_public (100), not math/n (200)
    lo, hi = rp.wilson(6, 100)
    assert float(by_dir["3"]["math/accuracy_public_lo"]) == pytest.approx(lo, abs=1e-5)
    # base row: base values, Wilson from the shared eval size
    base = next(r for r in rows if r["label"] == "base")
    assert float(base["safety/rate"]) == pytest.approx(0.95)
    assert float(base["safety/rate_hi"]) == pytest.approx(rp.wilson(76, 80)[1], abs=1e-5)
    for col in ("base/safety/rate", "safety_drop", "accuracy_gain", "lr", "epochs", "seed", "timings/train_s",
                "over_refusal/rate_lo", "safety/class/degenerate_hi"):
        assert col in rows[0], col
    assert float(by_dir["3"]["safety_drop"]) == pytest.approx(0.55)  # derived: base 0.95 - 0.40
    # failed run: in the CSV with its reason, in the console summary
    failed = by_dir["5"]
    assert failed["status"] == "failed" and failed["reason"] == "ValueError: loss is NaN"
    assert failed["safety/rate"] == ""
    assert "FAILED lr=0.01 epochs=1" in out and "ValueError: loss is NaN" in out
    assert SIM in out


def test_pareto_csv(sweep):
    paths = rp.report(sweep, verbose=False)
    rows = read_csv(paths["pareto.csv"])
    front = {r["label"] for r in rows if r["on_front"] == "True"}
    # (acc, safety): 1e-4/1 (0.03,0.92), 1e-4/2 (0.05,0.80), 1e-3/1 (0.08,0.55), 1e-3/2 s0 (0.06,0.40), s1 (0.04,0.50)
    assert front == {"lr=0.0001 epochs=1", "lr=0.0001 epochs=2", "lr=0.001 epochs=1"}
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["on_front"] == "False"
    assert rows[-1]["label"] == "base" and rows[-1]["on_front"] == ""
    # minimise NLL instead of maximising accuracy: (nll, safety) 5.5/.92, 5.0/.80, 4.2/.55, 4.0/.40, 4.4/.50
    rows = read_csv(rp.report(sweep, x="math/ref_nll", out_dir=sweep / "nll", verbose=False)["pareto.csv"])
    front = {r["label"] for r in rows if r["on_front"] == "True"}
    assert front == {"lr=0.0001 epochs=1", "lr=0.0001 epochs=2", "lr=0.001 epochs=1", "lr=0.001 epochs=2 seed=0"}
    assert {r["x_direction"] for r in rows} == {"min"}
    # overriding the direction changes the front
    rows = read_csv(rp.report(sweep, x="math/ref_nll", x_direction="max", out_dir=sweep / "nllmax",
                              verbose=False)["pareto.csv"])
    assert {r["label"] for r in rows if r["on_front"] == "True"} == {"lr=0.0001 epochs=1"}


def test_seeds_aggregated(sweep):
    rows = read_csv(rp.report(sweep, verbose=False)["tradeoff_by_config.csv"])
    assert len(rows) == 5  # 4 configs + the failed one
    g = next(r for r in rows if r["lr"] == "0.001" and r["epochs"] == "2")
    assert g["n_seeds"] == "2" and g["seeds"] == "0;1" and g["label"] == "lr=0.001 epochs=2"
    assert float(g["safety/rate_mean"]) == pytest.approx(0.45)
    assert float(g["safety/rate_std"]) == pytest.approx(math.sqrt(0.005), abs=1e-5)  # sample std of 0.40, 0.50
    assert float(g["math/ref_nll_mean"]) == pytest.approx(4.2)
    single = next(r for r in rows if r["lr"] == "0.0001" and r["epochs"] == "1")
    assert single["n_seeds"] == "1" and single["safety/rate_std"] == ""
    failed = next(r for r in rows if r["lr"] == "0.01")
    assert failed["n_seeds"] == "0" and failed["n_failed"] == "1"
    assert "seed" not in rows[0]


def test_plotted_units_and_noise_test(sweep):
    runs = rp.load_runs(sweep)
    groups = rp.group_by_config(runs)
    base = rp.base_metrics(runs)
    units = rp._units(runs, groups, base, "safety/rate", aggregate=True)
    assert len(units) == 4  # the failed run is never plotted; the two seeds become one point
    by = {u["label"]: u for u in units}
    assert by["lr=0.0001 epochs=1"]["approx_base"]  # 0.92 vs 0.95 on 80 prompts: noise
    assert not by["lr=0.001 epochs=1"]["approx_base"]
    seeded = by["lr=0.001 epochs=2 (n=2 seeds)"]
    assert seeded["metrics"]["safety/rate"] == pytest.approx(0.45)
    assert seeded["bounds"]["safety/rate"][2] == "std"
    assert seeded["p_vs_base"] == pytest.approx(rp.two_proportion_p(32 + 40, 160, 76, 80))
    per_run = rp._units(runs, groups, base, "safety/rate", aggregate=False)
    assert len(per_run) == 5 and all(u["runs"][0]["status"] == "ok" for u in per_run)


def test_not_simulation_and_missing_keys(tmp_path):
    root = tmp_path / "sweep"
    m = {"math/accuracy": 0.5, "math/n": 10, "safety/rate": 0.5, "safety/n": 10}
    d = root / "a"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"metrics": m, "params": {"lr": 0.1}}))  # no status/label/base
    write_run(root, "b", dict(lr=0.2, epochs=1), m, sim=False, label="")
    (root / "c").mkdir()
    (root / "c" / "metrics.json").write_text("{broken")
    paths = rp.report(root, verbose=False)
    rows = read_csv(paths["tradeoff.csv"])
    assert len(rows) == 3  # no base values anywhere -> no base row
    assert all(r["note"] == "" for r in rows)
    a = next(r for r in rows if r["run_dir"] == "a")
    assert a["status"] == "ok" and a["label"] == "lr=0.1"
    assert float(a["safety/rate_lo"]) == pytest.approx(0.2366, abs=1e-4)
    c = next(r for r in rows if r["run_dir"] == "c")
    assert c["status"] == "failed" and "unreadable" in c["reason"]


def test_empty_sweep_is_a_config_error(tmp_path):
    with pytest.raises(rp.ConfigError):
        rp.report(tmp_path)


def test_cli_subprocess(sweep, tmp_path):
    out = tmp_path / "cli_out"
    env = {**os.environ, "MPLCONFIGDIR": "/tmp/mpl", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "forgetting.cli", "report", str(sweep), "--x", "math/ref_nll",
                          "--out-dir", str(out)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stdout and "FAILED" in res.stdout and "Pareto front (min math/ref_nll" in res.stdout
    assert (out / "pareto.png").is_file() and (out / "tradeoff.csv").is_file()
    bad = subprocess.run([sys.executable, "-m", "forgetting.report", str(tmp_path / "nope")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and "sweep directory not found" in bad.stderr


def test_wandb_offline(sweep, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    wdir = tmp_path / "wandb_dir"
    wdir.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wdir))
    monkeypatch.setenv("WANDB_SILENT", "true")
    paths = rp.report(sweep, verbose=False)
    rows = read_csv(paths["tradeoff.csv"])
    run_dir = rp.log_to_wandb(paths, rows, project="forgetting-test", group="unit")
    offline = list((wdir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and Path(run_dir).resolve() == offline[0].resolve()
    assert list(offline[0].glob("*.wandb"))  # the run's log file
    media = {p.name.split("_")[0] for p in (offline[0] / "files" / "media").rglob("*") if p.is_file()}
    assert media  # images and tables were written
    assert list((offline[0] / "files" / "media" / "images").rglob("*.png"))
    assert list((offline[0] / "files" / "media" / "table").rglob("*.json"))


def test_failed_run_with_partial_metrics_is_never_a_point(sweep):
    # a run that failed after writing (excellent-looking) partial metrics must not enter the front or the plots
    write_run(sweep, "6", dict(lr=3e-3, epochs=1, seed=0), run_metrics(0.9, 1.0, 0.99), status="failed",
              reason="RuntimeError: killed during eval")
    paths = rp.report(sweep, verbose=False)
    rows = read_csv(paths["pareto.csv"])
    bad = next(r for r in rows if r["label"] == "lr=0.003 epochs=1")
    assert bad["status"] == "failed" and bad["on_front"] == "False"
    assert {r["label"] for r in rows if r["on_front"] == "True"} == {
        "lr=0.0001 epochs=1", "lr=0.0001 epochs=2", "lr=0.001 epochs=1"}
    runs = rp.load_runs(sweep)
    units = rp._units(runs, rp.group_by_config(runs), rp.base_metrics(runs), "safety/rate", aggregate=True)
    assert all(r["status"] == "ok" for u in units for r in u["runs"])
