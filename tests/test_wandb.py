"""W&B offline, read back from the .wandb files themselves (W&B's protobuf records): a 2-run micro sweep
and its report --wandb leave per-evaluation history, tags, one base run, the summary run's table and plots,
generation tables per evaluation set; `make sync` finds every offline run but attempts/."""
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("wandb")
ROOT = Path(__file__).resolve().parents[1]
FAST = ["model=micro", "eval=smoke", "data.n_train=16", "optimizer.batch_size=8"]


def records(path: Path):
    """The records of a .wandb file: a ':W&B' header, then LevelDB-log blocks of 32 KiB (7-byte record heads)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and n == 0:  # zero padding to the block's end
            pos += left
            continue
        buf, pos = buf + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):  # FULL or LAST
            r = pb.Record()
            r.ParseFromString(buf)
            yield r
            buf = b""


def key(item) -> str:
    return item.key or ".".join(item.nested_key)


def read_run(path: Path) -> dict:
    out = {"dir": path.parent, "history": [], "summary": {}, "metrics": {}, "config": {}}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(name=r.run.display_name, tags=set(r.run.tags), group=r.run.run_group,
                       job_type=r.run.job_type, project=r.run.project)
        elif kind == "history":
            out["history"].append({key(i): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({key(i): json.loads(i.value_json) for i in r.summary.update})
        elif kind == "metric" and r.metric.name:
            out["metrics"][r.metric.name] = r.metric.step_metric
        elif kind == "config":
            out["config"].update({key(i): json.loads(i.value_json) for i in r.config.update})
    return out


def table(run: dict, name: str) -> dict:
    row = next(h for h in run["history"] if f"{name}.path" in h)
    return json.loads((run["dir"] / "files" / row[f"{name}.path"]).read_text())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("wb") / "wbsweep"
    env = dict(os.environ, WANDB_MODE="offline")
    env.pop("WANDB_PROJECT", None)
    r = subprocess.run([sys.executable, "launch.py", "-m", *FAST, "epochs=1,2", "eval.every_epoch=true",
                        "optimizer.lr_scheduler_type=constant", "optimizer.warmup_ratio=0", "logger=wandb",
                        f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "forgetting.report", str(sweep), "--wandb"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [read_run(f) for f in sorted(sweep.rglob("offline-run-*/run-*.wandb"))]
    return sweep, {t: [r for r in runs if r["job_type"] == t] for t in ("finetune", "base", "summary")}, runs


def test_runs_are_tagged_named_and_grouped(sweep):
    d, by, runs = sweep
    assert len(runs) == 4 and [len(by[t]) for t in ("finetune", "base", "summary")] == [2, 1, 1]
    assert {r["group"] for r in runs} == {d.name} and {r["project"] for r in runs} == {"forgetting-sim"}
    for r in by["finetune"]:
        assert {"model=micro", "judge=refusal", "method=sft", "data=gsm8k", "poison=0", "simulation"} <= r["tags"]
    names = sorted(r["name"] for r in by["finetune"])
    assert names[0].startswith("lr=0.0002 epochs=1 #0 ") and names[1].startswith("lr=0.0002 epochs=2 #1 ")
    rec = json.loads(next(d.glob("1_*/metrics.json")).read_text())
    assert rec["wandb"]["project"] == "forgetting-sim" and rec["wandb"]["name"] == names[1]


def test_every_evaluation_is_a_history_row_at_its_epoch(sweep):
    d, by, _ = sweep
    keys = ("safety/rate", "math/accuracy", "asr/mean", "asr/advbench", "asr/harmbench", "over_refusal/rate")
    for r in by["finetune"]:
        assert all(r["metrics"][k] == "epoch" for k in keys)  # charted against the epoch, not the Trainer's step
        evals = [h for h in r["history"] if "safety/rate" in h]
        n = 2 if "epochs=2" in r["name"] else 1
        assert [h["epoch"] for h in evals] == list(range(n + 1))  # the base (0), every epoch, the final eval
        assert all(k in h for h in evals for k in keys)
        assert not any(k.endswith("/n") or "/class/" in k and k.startswith("asr/") for h in evals for k in h)
        m = json.loads((r["dir"].parents[1] / "metrics.json").read_text())["metrics"]
        assert evals[-1]["safety/rate"] == pytest.approx(m["safety/rate"]) == r["summary"]["safety/rate"]
        assert evals[0]["safety/rate"] == pytest.approx(m["base/safety/rate"])
        assert any("train/loss" in h for h in r["history"])  # the Trainer's own rows stay


def test_generation_tables_for_every_evaluation_set(sweep):
    _, by, _ = sweep
    for run in by["finetune"] + by["base"]:
        cols = {n: table(run, f"generations/{n}")["columns"] for n in ("math", "safety", "harmful", "over_refusal")}
        assert {"safe", "class", "response"} <= set(cols["safety"]) and {"safe", "class", "set"} <= set(cols["harmful"])
        assert {"refused", "class"} <= set(cols["over_refusal"]) and "correct" in cols["math"]


def test_base_run_once_per_sweep_with_its_scores(sweep):
    d, by, _ = sweep
    base = by["base"][0]
    assert base["dir"].parents[1] == d and {"base", "simulation", "model=micro"} <= base["tags"]
    evals = [h for h in base["history"] if "safety/rate" in h]
    assert len(evals) == 1 and evals[0]["epoch"] == 0
    m = json.loads(next(d.glob("0_*/metrics.json")).read_text())["metrics"]
    assert base["summary"]["safety/rate"] == pytest.approx(m["base/safety/rate"])
    assert base["summary"]["math/accuracy"] == pytest.approx(m["base/math/accuracy"])


def test_summary_run_has_the_runs_table_and_native_plots(sweep):
    d, by, _ = sweep
    s = by["summary"][0]
    t = table(s, "sweep/runs")
    rows = [dict(zip(t["columns"], row)) for row in t["data"]]
    assert [r["status"] for r in rows] == ["base", "ok", "ok", "ok"]  # run 2's epoch 1 is a point of its own
    assert {"run", "lr", "epochs", "method", "safety_rate", "math_accuracy", "asr_mean", "on_front"} <= set(t["columns"])
    charts = {k.split(".")[-1]: v["panel_config"]["panelDefId"] for k, v in s["config"].items()
              if k.startswith("_wandb.visualize.")}
    assert charts["plots/safety_vs_accuracy"] == charts["plots/safety_vs_asr"] == "wandb/scatter/v0"
    assert charts["plots/pareto_front"] == "wandb/line/v0"
    assert s["summary"]["runs/ok"] == 3 and "simulation" in s["tags"]


def test_sync_finds_every_offline_run_but_attempts(sweep, tmp_path):
    from forgetting import wandb_sync

    d, _, runs = sweep
    old = d / "0_x" / "attempts" / "1" / "wandb" / "offline-run-old"
    old.mkdir(parents=True)
    found = wandb_sync.offline_runs(wandb_sync.roots([str(d), str(d)]))
    assert {r["dir"].resolve() for r in runs} <= set(found) and old.resolve() not in found


def test_project_keeps_simulations_apart(compose, monkeypatch):
    from forgetting.tracking import project

    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    assert project(compose(["model=micro"])) == "forgetting-sim"
    assert project(compose(["model=llama3_2_1b_instruct"])) == "forgetting"
    assert project(compose(["model=micro", "logger.project=mine"])) == "mine"
    monkeypatch.setenv("WANDB_PROJECT", "env")
    assert project(compose(["model=micro"])) == "env"
