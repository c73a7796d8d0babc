"""judge=openai against a real chat-completions server on 127.0.0.1 (http.server in a thread, random port):
success, retry after a 500, a timeout, garbage bodies, logprobs → P(unsafe)."""
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from forgetting.judges.openai_judge import JudgeUnavailable, OpenAIJudge, p_unsafe_from_logprobs


def completion(text, logprobs=None):
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [choice]}).encode()


def lp(tokens):
    """logprobs.content for [(token, prob, [(alt, prob), ...]), ...]"""
    return {"content": [{"token": t, "logprob": math.log(p),
                         "top_logprobs": [{"token": a, "logprob": math.log(q)} for a, q in alts]}
                        for t, p, alts in tokens]}


class Server:
    """`plan(request_number, body) -> (status, bytes, delay_s)`; every request body is recorded."""

    def __init__(self, plan):
        self.plan, self.requests, self.lock = plan, [], threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    n = len(outer.requests)
                    outer.requests.append({"path": self.path, "body": body,
                                           "auth": self.headers.get("Authorization")})
                status, payload, delay = outer.plan(n, body)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def by_response(body):
    return body["messages"][1]["content"]


def test_success_request_shape_and_verdicts(monkeypatch):
    monkeypatch.setenv("GUARD_TEST_KEY", "sekrit")
    replies = {"fine": completion("safe", lp([("safe", 0.93, [("unsafe", 0.06)])])),
               "bad": completion("unsafe\nS1,S10", lp([("unsafe", 0.8, [("safe", 0.2)]), ("\n", 1.0, [])])),
               "nolp": completion("\n\nsafe")}
    with Server(lambda n, b: (200, replies[by_response(b)], 0)) as srv:
        judge = OpenAIJudge(srv.url, "meta-llama/Llama-Guard-3-8B", api_key_env="GUARD_TEST_KEY", concurrency=2)
        v = judge(["q1", "q2", "q3"], ["fine", "bad", "nolp"])
    assert [(x.safe, x.categories, x.parsed) for x in v] == [(True, [], True), (False, ["S1", "S10"], True),
                                                            (True, [], True)]
    assert v[0].p_unsafe == pytest.approx(0.06) and v[1].p_unsafe == pytest.approx(0.8) and v[2].p_unsafe is None
    assert v[1].raw == "unsafe\nS1,S10"
    assert len(srv.requests) == 3
    r = next(x for x in srv.requests if by_response(x["body"]) == "bad")
    assert r["path"] == "/v1/chat/completions" and r["auth"] == "Bearer sekrit"
    assert r["body"]["messages"] == [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "bad"}]
    assert r["body"]["model"] == "meta-llama/Llama-Guard-3-8B"
    assert (r["body"]["temperature"], r["body"]["logprobs"], r["body"]["top_logprobs"]) == (0, True, 5)
    assert judge.stats["requests"] == 3 and judge.stats["retries"] == 0 and judge([], []) == []


def test_no_key_no_header(monkeypatch):
    monkeypatch.delenv("GUARD_NO_SUCH_KEY", raising=False)
    with Server(lambda n, b: (200, completion("safe"), 0)) as srv:
        OpenAIJudge(srv.url, "m", api_key_env="GUARD_NO_SUCH_KEY")(["q"], ["a"])
    assert srv.requests[0]["auth"] is None


def test_500_then_success_is_retried():
    plan = lambda n, b: (500, b'{"error": "overloaded"}', 0) if n == 0 else (200, completion("unsafe\nS2"), 0)
    with Server(plan) as srv:
        judge = OpenAIJudge(srv.url, "m", max_retries=2, backoff_s=0.01)
        v = judge(["q"], ["a"])
    assert len(srv.requests) == 2 and judge.stats["retries"] == 1
    assert (v[0].safe, v[0].categories, v[0].parsed) == (False, ["S2"], True)


def test_429_retried_then_clear_error_after_last_retry():
    with Server(lambda n, b: (429, b"slow down", 0)) as srv:
        judge = OpenAIJudge(srv.url, "m", max_retries=2, backoff_s=0.01)
        with pytest.raises(JudgeUnavailable, match=r"failed after 3 attempts.*HTTP 429") as e:
            judge(["q"], ["a"])
    assert len(srv.requests) == 3 and "\n" not in str(e.value)


def test_backoff_is_exponential():
    times = []

    def plan(n, body):
        times.append(time.monotonic())
        return 503, b"busy", 0

    with Server(plan) as srv:
        with pytest.raises(JudgeUnavailable, match="failed after 3 attempts"):
            OpenAIJudge(srv.url, "m", max_retries=2, backoff_s=0.1)(["q"], ["a"])
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) == 2 and 0.1 <= gaps[0] < 0.19 and 0.2 <= gaps[1] < 0.35


def test_timeout_gives_a_clear_error_in_bounded_time():
    with Server(lambda n, b: (200, completion("safe"), 2.0)) as srv:
        judge = OpenAIJudge(srv.url, "m", timeout_s=0.2, max_retries=1, backoff_s=0.01)
        t0 = time.monotonic()
        with pytest.raises(JudgeUnavailable, match=r"failed after 2 attempts \(timeout 0.2s\)") as e:
            judge(["q"], ["a"])
        elapsed = time.monotonic() - t0
    assert len(srv.requests) == 2 and elapsed < 1.5 and "\n" not in str(e.value)


def test_connection_refused_is_retried_then_reported():
    with Server(lambda n, b: (200, b"", 0)) as srv:
        url = srv.url
    judge = OpenAIJudge(url, "m", max_retries=1, backoff_s=0.01, timeout_s=1)
    with pytest.raises(JudgeUnavailable, match="failed after 2 attempts"):
        judge(["q"], ["a"])


def test_client_errors_are_not_retried():
    with Server(lambda n, b: (404, b'{"error": "model not found"}', 0)) as srv:
        with pytest.raises(JudgeUnavailable, match="HTTP 404.*not retried"):
            OpenAIJudge(srv.url, "nope", max_retries=3, backoff_s=0.01)(["q"], ["a"])
    assert len(srv.requests) == 1


@pytest.mark.parametrize("body", [b"<html>bad gateway</html>", b'{"choices": []}', b'{"object": "error"}',
                                  b'{"choices": [{"message": {"content": null}}]}', completion("I refuse.")])
def test_garbage_is_an_unparsed_verdict_not_a_crash(body):
    with Server(lambda n, b: (200, body, 0)) as srv:
        judge = OpenAIJudge(srv.url, "m", max_retries=0)
        v = judge(["q", "q2"], ["a", "b"])
    assert all(x.safe is False and x.parsed is False for x in v)
    assert v[0].raw and judge.stats["unparsed"] == 2


def test_concurrency_is_bounded_and_order_kept():
    live, peak, lock = [0], [0], threading.Lock()

    def plan(n, body):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.05)
        with lock:
            live[0] -= 1
        return 200, completion("unsafe\nS1" if by_response(body).endswith("!") else "safe"), 0

    responses = [f"r{i}" + ("!" if i % 3 == 0 else "") for i in range(12)]
    with Server(plan) as srv:
        v = OpenAIJudge(srv.url, "m", concurrency=3)(["q"] * 12, responses)
    assert [x.safe for x in v] == [not r.endswith("!") for r in responses]
    assert peak[0] <= 3


def test_threshold_uses_logprobs_when_set():
    body = completion("safe", lp([("safe", 0.55, [("unsafe", 0.45)])]))
    with Server(lambda n, b: (200, body, 0)) as srv:
        assert OpenAIJudge(srv.url, "m")(["q"], ["a"])[0].safe is True
        j = OpenAIJudge(srv.url, "m", threshold=0.4)
        v = j(["q"], ["a"])[0]
    assert v.safe is False and v.p_unsafe == pytest.approx(0.45) and j.stats["disagreements"] == 1


def test_p_unsafe_from_logprobs_shapes():
    assert p_unsafe_from_logprobs(None) is None and p_unsafe_from_logprobs({"content": None}) is None
    # leading whitespace token skipped; " unsafe" and "unsafe" variants summed
    got = p_unsafe_from_logprobs(lp([("\n\n", 1.0, []), (" unsafe", 0.5, [("unsafe", 0.2), ("safe", 0.3)])]))
    assert got == pytest.approx(0.7)
    assert p_unsafe_from_logprobs(lp([("safe", 0.99, [("Sure", 0.01)])])) == 0.0


def test_config(conf_dir, monkeypatch):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    monkeypatch.delenv("GUARD_BASE_URL", raising=False)
    cfg = OmegaConf.load(f"{conf_dir}/judge/openai.yaml")
    j = instantiate(cfg)
    assert j.url == "http://127.0.0.1:8000/v1/chat/completions" and j.model == "meta-llama/Llama-Guard-3-8B"
    monkeypatch.setenv("GUARD_BASE_URL", "http://guard:9000/v1/")
    assert instantiate(OmegaConf.load(f"{conf_dir}/judge/openai.yaml")).url == "http://guard:9000/v1/chat/completions"
