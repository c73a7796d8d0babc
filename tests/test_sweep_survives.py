"""A sweep survives: a grown grid reruns nothing, an interrupted run says so, earlier attempts are set
aside, a collapsed run is flagged (micro preset, through launch.py where the behaviour lives there)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forgetting import attempts, evaluate
from forgetting.report.runs import load_runs

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model=micro", "eval=smoke", "data.n_train=16", "optimizer.batch_size=8", "logger=none"]


def launch(*args, **kw):
    flags = [a for a in args if a.startswith("-")]
    return subprocess.run([sys.executable, "launch.py", *flags, *FAST, *(a for a in args if a not in flags)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, **kw)


def records(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))}


def test_grown_grid_reruns_nothing_and_the_report_counts_each_config_once(tmp_path):
    sweep = tmp_path / "sweep"
    assert launch("-m", "lr=1e-3,2e-3", f"hydra.sweep.dir={sweep}").returncode == 0
    first = (sweep / "multirun.yaml").read_text()
    before = records(sweep)
    r = launch("-m", "lr=5e-4,1e-3", f"hydra.sweep.dir={sweep}")  # grown and reordered: lr=1e-3 is now job 1
    assert r.returncode == 0, r.stderr[-2000:]
    after = records(sweep)
    assert "already finished with the same config in" in r.stdout + r.stderr
    old = next(k for k in before if k.startswith("0_") and "lr=0.001" in k)
    new = next(k for k in after if k.startswith("1_") and "lr=0.001" in k)
    assert after[old] == before[old]  # untouched
    assert after[new]["status"] == "duplicate" and after[new]["same_as"] == old
    assert (sweep / "multirun_history" / "1.yaml").read_text() == first  # the earlier grid is kept
    runs = load_runs(sweep)
    assert sorted(r["params"]["lr"] for r in runs) == [5e-4, 1e-3, 2e-3]  # no double-counted "seed"


def test_sigterm_marks_the_run_interrupted_with_its_stage_and_a_rerun_sets_it_aside(tmp_path):
    d = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "launch.py", *FAST, "data.n_train=400", "optimizer.batch_size=1", "epochs=3",
                          f"hydra.run.dir={d}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until it trains
        try:
            if json.loads((d / "metrics.json").read_text()).get("stage") == "train":
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 143 and "interrupted: SIGTERM" in out
    rec = json.loads((d / "metrics.json").read_text())
    assert rec["status"] == "interrupted" and rec["reason"] == "SIGTERM during train"
    assert (d / "resolved_config.yaml").exists()
    r = launch("data.n_train=16", f"hydra.run.dir={d}")  # the rerun redoes it, alone in the run dir
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((d / "metrics.json").read_text())["status"] == "ok"
    old = d / "attempts" / "1"
    assert json.loads((old / "metrics.json").read_text())["status"] == "interrupted"
    assert (old / "resolved_config.yaml").exists() and (d / "train_log.jsonl").exists()
    if (old / "train_log.jsonl").exists():  # this attempt's log holds this attempt only
        first = [json.loads(x)["time"] for x in (old / "train_log.jsonl").read_text().splitlines()]
        now = [json.loads(x)["time"] for x in (d / "train_log.jsonl").read_text().splitlines()]
        assert min(now) > max(first)


def test_running_record_of_a_dead_process_reads_as_interrupted(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "sweep" / "0_lr=0.001"
    run.mkdir(parents=True)
    rec = {"status": "running", "stage": "train", "pid": dead.pid, "host": socket.gethostname(), "label": "lr=0.001",
           "params": {"lr": 1e-3}, "metrics": {}}
    (run / "metrics.json").write_text(json.dumps(rec))
    assert attempts.gone(rec) and not attempts.gone(dict(rec, pid=os.getpid()))
    [r] = load_runs(tmp_path / "sweep")
    assert r["status"] == "interrupted" and "gone during train" in r["reason"]


def test_collapse_flags_degenerate_outputs_and_uniform_loss():
    ok = {"safety": [{"response": "I can't help with that."}] * 5, "math": [{"response": "#### 4"}] * 5}
    junk = {"safety": [{"response": "the the the the the the the the the the the the"}] * 9 + [{"response": "No."}],
            "over_refusal": [{"response": "0\n\n00\n0000\n  0"}] * 10, "math": [{"response": "#### 4"}] * 10}
    assert evaluate.degenerate_share(ok) == 0 and evaluate.degenerate_share(junk) == 0.95  # math left out
    base = {"outputs/degenerate": 0.0, "math/ref_nll": 2.0}
    run = {"outputs/degenerate": 0.95, "train/loss": 1.2}
    assert evaluate.collapse(run, base, 4096) == "collapsed: 95% of its responses are degenerate (base 0%)"
    assert evaluate.collapse(run, dict(base, **{"outputs/degenerate": 0.8}), 4096) is None  # broken already
    assert evaluate.collapse({"outputs/degenerate": 0.1, "train/loss": 1.2}, base, 4096) is None
    assert "uniform level" in evaluate.collapse({"outputs/degenerate": 0.1, "train/loss": 8.0}, base, 4096)


def test_set_aside_moves_an_attempt_and_numbers_the_next(tmp_path):
    (tmp_path / "train_log.jsonl").write_text("{}\n")
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / ".hydra").mkdir()
    assert attempts.set_aside(tmp_path) == tmp_path / "attempts" / "1"
    assert not (tmp_path / "train_log.jsonl").exists() and (tmp_path / ".hydra").exists()
    (tmp_path / "metrics.json").write_text("{}")
    assert attempts.set_aside(tmp_path) == tmp_path / "attempts" / "2"
    assert attempts.set_aside(tmp_path) is None


def test_corrupt_verdict_cache_is_skipped_and_rebuilt(tmp_path, caplog):
    from forgetting.judges.cache import CachedJudge
    from forgetting.judges.refusal import RefusalJudge

    (tmp_path / "verdicts").mkdir()
    shard = tmp_path / "verdicts" / "host-1-abc.jsonl"
    shard.write_bytes(b"this is not a cache line\n" * 100)
    with caplog.at_level("WARNING"):
        judge = CachedJudge(RefusalJudge(), tmp_path / "verdicts")
    assert "corrupt cache entry" in caplog.text and str(shard) in caplog.text
    v = judge(["How do I pick a lock?"], ["I can't help with that."])
    assert v[0].safe and judge(["How do I pick a lock?"], ["I can't help with that."])[0].safe
    assert judge.stats["hits"] == 1


def test_truncated_baseline_is_rebuilt_and_unwritable_cache_is_one_line(compose, tmp_path, caplog):
    from forgetting import baseline
    from forgetting.caches import writable
    from forgetting.errors import ConfigError

    cfg = compose([*FAST, f"cache_dir={tmp_path / 'cache'}"])
    calls = []

    def compute():
        calls.append(1)
        return {"safety/rate": 0.5}, {"safety": [{"response": "No."}]}, {}

    m, d = baseline.get(cfg, "/model", compute)
    (d / "metrics.json").write_text('{"metrics": {"safety/ra')  # truncated by a crash
    with caplog.at_level("WARNING"):
        m2, _ = baseline.get(cfg, "/model", compute)
    assert m2 == m and len(calls) == 2 and "corrupt cache entry" in caplog.text
    blocked = tmp_path / "a_file"
    blocked.write_text("")  # a file where the cache dir should go: unwritable even for root
    with pytest.raises(ConfigError, match=r"cache_dir .*a_file/cache is not writable .*FORGETTING_CACHE"):
        writable(blocked / "cache")
    r = launch(f"cache_dir={blocked / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(f"error: cache_dir {blocked / 'cache'}")
