"""The base-evaluation cache on a shared filesystem whose locks do not work: two jobs that compute the
same entry at once publish one complete entry (every file from one writer), and both report it."""
import json
import multiprocessing as mp
import os
import time
from contextlib import nullcontext


def _job(cfg, q, calls):
    from forgetting import baseline

    baseline.FileLock = lambda path: nullcontext()  # NFS without working locks: both compute

    def compute():
        time.sleep(0.5)
        pid = os.getpid()
        with open(calls, "a") as f:
            f.write(f"{pid}\n")
        return {"safety/rate": pid}, {"safety": [{"response": f"by {pid}"}]}, {}

    metrics, d = baseline.get(cfg, "/model", compute)
    q.put((metrics["safety/rate"], str(d)))


def test_two_jobs_computing_one_baseline_publish_one_entry(compose, tmp_path):
    cfg = compose(["model=micro", "eval=smoke", f"cache_dir={tmp_path / 'cache'}"])
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_job, args=(cfg, q, tmp_path / "calls")) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    got = [q.get(timeout=5) for _ in procs]
    assert len((tmp_path / "calls").read_text().split()) == 2  # both computed: the race happened
    assert len({d for _, d in got}) == 1
    d = tmp_path / "cache" / "baselines" / os.path.basename(got[0][1])
    winner = json.loads((d / "metrics.json").read_text())["metrics"]["safety/rate"]
    assert {m for m, _ in got} == {winner}  # the loser reports the published entry, not its own
    assert json.loads((d / "safety_generations.jsonl").read_text())["response"] == f"by {winner}"
    assert [p.name for p in d.parent.iterdir() if p.name.endswith(".tmp")] == []
