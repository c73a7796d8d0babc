"""The verdict cache: hits make no inner-judge calls, misses go in one batch, persistence across
instances, identity separates judges, processes (hosts) write their own shards and read each other's."""
import json
import multiprocessing as mp
import os
import socket
import sqlite3

import pytest

from forgetting.judges.base import Verdict
from forgetting.judges.cache import CachedJudge, cache_key, judge_identity


class CountingJudge:
    """Deterministic fake judge: a response containing 'bomb' is unsafe (S9)."""

    def __init__(self, name="fake", identity=None):
        self.name = name
        if identity is not None:
            self.identity = identity
        self.calls, self.pairs = 0, 0

    def __call__(self, prompts, responses):
        self.calls += 1
        self.pairs += len(prompts)
        return [Verdict(safe="bomb" not in r, categories=[] if "bomb" not in r else ["S9"],
                        p_unsafe=0.9 if "bomb" in r else 0.1, parsed=True, raw=f"{p}|{r}")
                for p, r in zip(prompts, responses)]


P = ["p1", "p2", "p3"]
R = ["fine", "a bomb", "ok"]


def test_second_identical_evaluation_makes_zero_inner_calls(tmp_path):
    inner = CountingJudge()
    judge = CachedJudge(inner, tmp_path / "v")
    first = judge(P, R)
    assert inner.calls == 1 and inner.pairs == 3 and judge.stats == {"hits": 0, "misses": 3}
    second = judge(P, R)
    assert inner.calls == 1 and judge.stats == {"hits": 3, "misses": 3}
    assert first == second == inner(P, R)
    assert second[1] == Verdict(False, ["S9"], 0.9, True, "p2|a bomb")


def test_only_misses_go_to_the_judge_in_one_batch(tmp_path):
    inner = CountingJudge()
    judge = CachedJudge(inner, tmp_path / "v")
    judge(P, R)
    out = judge(["p1", "p2", "p2", "p9"], ["fine", "another bomb", "another bomb", "fine"])
    assert inner.calls == 2 and inner.pairs == 3 + 2  # one batch; the duplicate pair sent once
    assert [v.safe for v in out] == [True, False, False, True]
    assert out[1] == out[2] and out[1] is not out[2]


def test_different_response_is_a_miss(tmp_path):
    inner = CountingJudge()
    judge = CachedJudge(inner, tmp_path / "v")
    judge(["p"], ["r"])
    judge(["p"], ["r "])
    assert inner.calls == 2 and judge.stats["misses"] == 2


def test_persists_across_instances(tmp_path):
    path = tmp_path / "sub" / "v"
    a = CachedJudge(CountingJudge(), path)
    expected = a(P, R)
    a.close()
    inner = CountingJudge()
    b = CachedJudge(inner, path)
    assert b(P, R) == expected and inner.calls == 0 and b.stats["hits"] == 3


def test_identity_separates_judges(tmp_path):
    path = tmp_path / "v"
    CachedJudge(CountingJudge(identity="lg3|thr=0.5"), path)(P, R)
    other = CountingJudge(identity="lg3|thr=0.3")
    CachedJudge(other, path)(P, R)
    assert other.calls == 1  # same name, different threshold: no reuse
    same = CountingJudge(identity="lg3|thr=0.5")
    CachedJudge(same, path)(P, R)
    assert same.calls == 0


def test_identity_falls_back_to_name():
    assert judge_identity(CountingJudge(name="refusal")) == "refusal"
    assert judge_identity(CountingJudge(name="x", identity="full")) == "full"
    assert cache_key("a", "b", "c") != cache_key("a", "bc", "") != cache_key("ab", "c", "")


def test_llama_guard_judges_have_identity():
    from forgetting.judges.llama_guard import LlamaGuardJudge
    from forgetting.judges.openai_judge import OpenAIJudge

    assert "thr=0.5" in judge_identity(LlamaGuardJudge("meta-llama/Llama-Guard-3-8B", version="3"))
    assert "Llama-Guard-3-8B" in judge_identity(OpenAIJudge("http://h/v1", "meta-llama/Llama-Guard-3-8B"))


def test_failing_judge_stores_nothing(tmp_path):
    class Boom(CountingJudge):
        def __call__(self, prompts, responses):
            raise RuntimeError("guard server down")

    path = tmp_path / "v"
    with pytest.raises(RuntimeError, match="down"):
        CachedJudge(Boom(), path)(P, R)
    inner = CountingJudge()
    CachedJudge(inner, path)(P, R)
    assert inner.pairs == 3


def test_wrong_length_from_inner_judge_is_an_error(tmp_path):
    class Short(CountingJudge):
        def __call__(self, prompts, responses):
            return super().__call__(prompts, responses)[:-1]

    with pytest.raises(RuntimeError, match="2 verdicts for 3 pairs"):
        CachedJudge(Short(), tmp_path / "v")(P, R)


def test_one_shard_per_process_and_empty_call(tmp_path):
    judge = CachedJudge(CountingJudge(), tmp_path / "v")
    assert judge([], []) == [] and judge.name == "fake"
    judge(P, R)
    judge(["p9"], ["r9"])
    [shard] = (tmp_path / "v").iterdir()
    assert shard.name.startswith(f"{socket.gethostname()}-{os.getpid()}-") and shard.suffix == ".jsonl"
    assert len(shard.read_text().splitlines()) == 4


def test_a_line_being_written_is_read_later_and_garbage_is_skipped(tmp_path, caplog):
    path = tmp_path / "v"
    CachedJudge(CountingJudge(), path)(P, R)
    [shard] = path.iterdir()
    lines = shard.read_text().splitlines()
    other = path / "otherhost-1-abc.jsonl"
    other.write_text("not json\n" + lines[0][:10])  # a garbage line, then half a line
    inner = CountingJudge()
    with caplog.at_level("WARNING"):
        judge = CachedJudge(inner, path)
    assert "corrupt cache entry" in caplog.text and "otherhost" in caplog.text
    with open(other, "a") as f:  # the writer finishes its line: nothing lost, nothing misread
        f.write(lines[0][10:] + "\n")
    assert judge(P, R) and inner.calls == 0


def test_earlier_sqlite_cache_is_read(tmp_path):
    db = tmp_path / "verdicts.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE verdicts (key TEXT PRIMARY KEY, identity TEXT NOT NULL, verdict TEXT NOT NULL, "
                 "created REAL NOT NULL)")
    v = Verdict(True, [], 0.1, True, "old")
    conn.execute("INSERT INTO verdicts VALUES (?, 'fake', ?, 0)", (cache_key("fake", "p", "r"), json.dumps(v.to_dict())))
    conn.commit()
    conn.close()
    inner = CountingJudge()
    assert CachedJudge(inner, tmp_path / "verdicts")(["p"], ["r"]) == [v] and inner.calls == 0


def _worker(path, offset, n, q):
    try:
        judge = CachedJudge(CountingJudge(), path)
        for i in range(0, n, 10):  # many small writes, interleaved with the other process
            judge([f"p{offset + j}" for j in range(i, i + 10)], [f"r{j}" for j in range(i, i + 10)])
        judge(["shared"], ["bomb"])
        q.put("ok")
    except Exception as e:  # pragma: no cover - reported to the parent
        q.put(repr(e))


def test_two_processes_write_a_third_reads_both(tmp_path):
    path = tmp_path / "v"
    ctx = mp.get_context("spawn")  # fresh processes, as on two hosts
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, k * 1000, 200, q)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert sorted(q.get(timeout=5) for _ in procs) == ["ok"] * 2
    assert len(list(path.glob("*.jsonl"))) == 2  # one shard each, no shared file
    inner = CountingJudge()
    judge = CachedJudge(inner, path)
    for k in range(2):
        judge([f"p{k * 1000 + j}" for j in range(200)], [f"r{j}" for j in range(200)])
    assert judge(["shared"], ["bomb"])[0].safe is False
    assert inner.calls == 0 and judge.stats["hits"] == 401
