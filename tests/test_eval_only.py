"""Evaluation-only runs on the micro preset: `train=false` scores the base as a run (the base scores a trained
run records, to the last digit), `model.adapter=DIR` scores a saved adapter as its run did, and both are points
of the report, labelled as what they are."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from forgetting.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model=micro", "eval=smoke", "data.n_train=8", "optimizer.batch_size=8", "logger=none"]
TRAINING_KEYS = ("train/", "data/")  # what an eval-only run reports as 0 / null: nothing trained
GENERATIONS = ("math", "safety", "harmful", "over_refusal")


def _run(compose, run_dir: Path, *overrides) -> dict:
    from forgetting import run

    run.main(compose([*FAST, *overrides, f"+run_dir={run_dir}"]))
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One sweep dir: a short trained run (lr high enough to move the micro model away from its base), the base
    evaluated as a run, and the trained run's adapter evaluated as a run."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from forgetting.config import register

    register()

    def compose(overrides):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return hcompose("config", overrides=list(overrides))

    d = tmp_path_factory.mktemp("sweep")
    recs = {"trained": _run(compose, d / "trained", "lr=3e-2", "data.n_train=16")}
    recs["base"] = _run(compose, d / "base", "train=false")
    recs["adapter"] = _run(compose, d / "adapter", "train=false", f"model.adapter={d / 'trained' / 'adapter'}")
    return d, recs


def _evaluation(m: dict) -> dict:
    """The metrics an evaluation computes (not timings, not what training reports)."""
    return {k: v for k, v in m.items() if not k.startswith(TRAINING_KEYS) and not k.endswith("_s")}


def test_base_run_has_a_trained_runs_keys_and_exactly_the_base_scores(sweep):
    d, recs = sweep
    trained, base = recs["trained"], recs["base"]
    assert base["status"] == "ok" and base["label"] == "base (no training)" and base["eval_only"]["of"] == "base"
    assert set(base["metrics"]) == set(trained["metrics"])  # the same keys: one table, one report
    for k, v in base["metrics"].items():
        if f"base/{k}" in trained["metrics"]:
            assert v == trained["metrics"][f"base/{k}"], k  # what the trained run recorded as its base, exactly
    assert base["metrics"]["safety_drop"] == 0 and base["metrics"]["accuracy_gain"] == 0
    assert base["metrics"]["train/steps"] == 0 and base["metrics"]["train/loss"] is None
    assert base["metrics"]["data/n_user"] == 0
    p = base["params"]
    assert p["lr"] is None and p["epochs"] == 0 and p["n_train"] == 0 and p["method"] == "base"
    for f in ("resolved_config.yaml", *(f"{g}_generations.jsonl" for g in GENERATIONS)):
        assert (d / "base" / f).is_file(), f
    assert not (d / "base" / "adapter").exists() and not (d / "base" / "train_log.jsonl").exists()
    cached = Path(base["eval_only"]["scores_from"])
    for g in GENERATIONS:
        assert (d / "base" / f"{g}_generations.jsonl").read_text() == (cached / f"{g}_generations.jsonl").read_text()


def test_adapter_run_reproduces_the_run_that_trained_it(sweep):
    d, recs = sweep
    trained, ev = recs["trained"], recs["adapter"]
    assert ev["status"] == "ok" and ev["label"] == "eval-only: trained/adapter"
    assert set(ev["metrics"]) == set(trained["metrics"])
    assert _evaluation(ev["metrics"]) == _evaluation(trained["metrics"])  # greedy, fp32: identical
    assert ev["metrics"]["math/ref_nll"] != ev["metrics"]["base/math/ref_nll"]  # the adapter did change the model
    for g in GENERATIONS:
        assert (d / "adapter" / f"{g}_generations.jsonl").read_text() == (d / "trained" / f"{g}_generations.jsonl").read_text()
    info, p = ev["eval_only"], ev["params"]
    assert info["peft_type"] == "LORA" and len(info["adapter_sha256"]) == 64 and "warning" not in info
    assert p["lora_r"] == 8 and p["lora_alpha"] == 16 and p["lr"] is None and p["epochs"] == 0
    assert p["adapter"] == str(d / "trained" / "adapter")


def test_report_shows_both_as_labelled_points(sweep):
    from forgetting.report import report

    d, _ = sweep
    out = report(d, verbose=False)
    rows = {r["label"]: r for r in csv.DictReader(open(out["tradeoff.csv"], encoding="utf-8"))}
    assert {"base", "base (no training)", "eval-only: trained/adapter", "lr=0.03 epochs=1"} <= set(rows)
    for label in ("base (no training)", "eval-only: trained/adapter"):
        assert rows[label]["status"] == "ok" and rows[label]["lr"] == "" and rows[label]["epochs"] == "0"
    assert rows["base (no training)"]["safety/rate"] == rows["base"]["safety/rate"]
    methods = {r["method"] for r in csv.DictReader(open(out["methods.csv"], encoding="utf-8"))}
    assert methods == {"base", "sft", "eval-only: trained/adapter"}  # the base once: the eval-only base is its row


def test_config_hash_keeps_trained_runs_and_tells_adapters_apart(compose, tmp_path, sweep):
    from omegaconf import OmegaConf

    from forgetting.eval_only import identity
    from forgetting.resume import config_hash

    d, _ = sweep
    cfg = compose(FAST)
    before = OmegaConf.to_container(cfg, resolve=True)  # a config as it was before train / model.adapter / task existed
    before.pop("train"), before["model"].pop("adapter"), before.pop("task")
    assert config_hash(identity(cfg)) == config_hash(before)  # finished sweeps keep their hashes
    h = lambda *o: config_hash(identity(compose([*FAST, "train=false", *o])))  # noqa: E731
    assert h("lr=1e-3", "epochs=3", "seed=4") == h() != config_hash(identity(cfg))  # training settings: no part of it
    copy = tmp_path / "copy"
    shutil.copytree(d / "trained" / "adapter", copy)
    first = h(f"model.adapter={copy}")
    assert first != h()
    conf = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps(dict(conf, lora_alpha=32)))
    assert h(f"model.adapter={copy}") != first  # same path, other adapter: another run
    from forgetting import baseline

    with_adapter = compose([*FAST, "train=false", f"model.adapter={copy}"])
    assert baseline.key(with_adapter, "p") == baseline.key(cfg, "p")  # one base evaluation for all of them


def test_adapter_of_another_base_model_is_a_one_line_warning(compose, tmp_path, sweep, caplog):
    d, _ = sweep
    copy = tmp_path / "other"
    shutil.copytree(d / "trained" / "adapter", copy)
    conf = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps(dict(conf, base_model_name_or_path="someone/else-1B")))
    rec = _run(compose, tmp_path / "run", "train=false", f"model.adapter={copy}")
    warning = rec["eval_only"]["warning"]
    assert rec["status"] == "ok" and "'someone/else-1B'" in warning and "\n" not in warning
    assert any(warning == r.getMessage() for r in caplog.records)


def test_bad_adapter_path_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "nowhere"
    r = subprocess.run([sys.executable, "launch.py", *FAST, "train=false", f"model.adapter={missing}",
                        f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (f"error: model.adapter={missing}: no such directory (give a PEFT "
                                                 "adapter dir holding adapter_config.json and adapter_model.safetensors, "
                                                 "e.g. a run's adapter/)")


@pytest.mark.parametrize("overrides,message", [
    (["model.adapter=x"], "model.adapter evaluates an existing adapter: add train=false"),
    (["train=false", "method=merge"], "train=false evaluates without training: method=merge has nothing to act on"),
    (["train=false", "method=ewc"], "train=false evaluates without training: method=ewc"),
])
def test_refused_combinations_are_one_line(compose, overrides, message):
    from forgetting.config import validate

    with pytest.raises(ConfigError, match=message) as e:
        validate(compose([*FAST, *overrides]))
    assert "\n" not in str(e.value)


def test_an_adapter_dir_without_safetensors_is_refused(tmp_path, sweep):
    from forgetting.eval_only import adapter_config

    d, _ = sweep
    bin_only = tmp_path / "bin"
    bin_only.mkdir()
    shutil.copy(d / "trained" / "adapter" / "adapter_config.json", bin_only)
    (bin_only / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ConfigError, match="only adapter_model.bin: pickled weights are not loaded"):
        adapter_config(str(bin_only))
    with pytest.raises(ConfigError, match="no adapter_config.json there"):
        adapter_config(str(tmp_path))
