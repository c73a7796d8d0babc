"""A Llama Guard judge behind an OpenAI-compatible `/v1/chat/completions` endpoint (e.g. vLLM serving
meta-llama/Llama-Guard-3-8B). Standard library only (urllib + a bounded thread pool).

Each (prompt, response) pair is sent as the role messages `[{"role": "user", ...},
{"role": "assistant", ...}]`: the server applies the guard's own chat template (vLLM converts string
content to text parts for templates that need them, like Llama Guard 3 1B's). The reply's text is
parsed exactly like the local judge's (`llama_guard.parse_guard_output`). With `logprobs: true,
top_logprobs: 5` the server returns the first tokens' log-probabilities; p_unsafe is the summed
probability of the candidate tokens (chosen + top-5) at the first non-whitespace step that begin
"unsafe" and not "safe" — a lower bound when an unsafe token is outside the top 5, which for a
two-word classifier is negligible. Servers that return no logprobs give p_unsafe=None; `threshold`
then has nothing to act on and the text decides.

Failure policy (chosen so a passing outage is never cached as a verdict):
* connection errors, timeouts, HTTP 429 and 5xx are retried `max_retries` times with exponential
  backoff (backoff_s, 2·backoff_s, ...); after the last try the call raises `JudgeUnavailable`, a
  one-line message naming the URL, the attempt count and the last error. Nothing is returned for
  the batch, so a verdict cache stores nothing and a rerun resumes.
* other HTTP errors (400, 401, 404: wrong model name, missing key) are configuration errors: raised
  at once, no retry.
* a 200 reply whose body is not the chat-completions JSON (garbage, no choices, no text) is the
  server's answer: `Verdict(safe=False, parsed=False, raw=<body excerpt>)`, counted in
  `stats["unparsed"]` like any unparsable guard output.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from .base import Verdict, paired
from .llama_guard import decide

log = logging.getLogger(__name__)


class JudgeUnavailable(RuntimeError):
    """The judge endpoint could not be reached or kept failing after all retries."""


def _classify_token(token: str) -> str | None:
    t = token.strip().lower()
    if not t:
        return None
    if "safe".startswith(t) or t.startswith("safe"):
        return "safe"
    if "unsafe".startswith(t) or t.startswith("unsafe"):
        return "unsafe"
    return None


def p_unsafe_from_logprobs(logprobs) -> float | None:
    """P(unsafe) from an OpenAI `choices[0].logprobs` object (None when absent/unusable)."""
    try:
        content = logprobs["content"]
    except (TypeError, KeyError):
        return None
    if not isinstance(content, list):
        return None
    for entry in content:
        if not isinstance(entry, dict) or not str(entry.get("token", "")).strip():
            continue  # leading whitespace tokens ("\n\n") carry no verdict
        cands = {}
        for c in [entry] + list(entry.get("top_logprobs") or []):
            if isinstance(c, dict) and "token" in c and isinstance(c.get("logprob"), (int, float)):
                cands.setdefault(c["token"], float(c["logprob"]))
        p = sum(math.exp(lp) for tok, lp in cands.items() if _classify_token(tok) == "unsafe")
        return min(max(p, 0.0), 1.0)
    return None


class OpenAIJudge:
    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", version: str = "3",
                 timeout_s: float = 60, max_retries: int = 4, backoff_s: float = 1.0, concurrency: int = 8,
                 temperature: float = 0, name: str | None = None, max_tokens: int = 20,
                 threshold: float | None = None):
        self.base_url = str(base_url).rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = str(model)
        self.api_key_env = api_key_env
        self.version = str(version)
        self.timeout_s, self.max_retries, self.backoff_s = float(timeout_s), int(max_retries), float(backoff_s)
        self.concurrency = max(1, int(concurrency))
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)
        self.threshold = None if threshold is None else float(threshold)
        self.name = name or f"openai:{self.model}"
        self.stats = {"judged": 0, "unparsed": 0, "requests": 0, "retries": 0, "disagreements": 0}

    @property
    def identity(self) -> str:
        # the served model decides the verdict, not the host it is served from
        return (f"{self.name}|openai|{self.model}|v{self.version}|thr={self.threshold}"
                f"|temp={self.temperature}|max_tokens={self.max_tokens}")

    def _payload(self, prompt: str, response: str) -> bytes:
        return json.dumps({
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "logprobs": True,
            "top_logprobs": 5,
        }).encode()

    def _post(self, body: bytes) -> bytes:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        attempts, last = self.max_retries + 1, None
        for attempt in range(attempts):
            if attempt:
                self.stats["retries"] += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            self.stats["requests"] += 1
            req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    return r.read()
            except urllib.error.HTTPError as e:
                detail = e.read()[:200].decode("utf-8", "replace").replace("\n", " ")
                if e.code == 429 or e.code >= 500:
                    last = f"HTTP {e.code} {detail}".strip()
                    continue
                raise JudgeUnavailable(f"{self.url}: HTTP {e.code} (not retried: check model name, key, "
                                       f"request) {detail}".strip()) from None
            except (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                last = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
                continue
        raise JudgeUnavailable(f"{self.url}: failed after {attempts} attempts (timeout {self.timeout_s:g}s); "
                               f"last error: {last}")

    def _judge_one(self, pair) -> tuple[Verdict, bool]:
        raw = self._post(self._payload(*pair))
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not text")
        except (ValueError, KeyError, IndexError, TypeError):
            excerpt = raw[:500].decode("utf-8", "replace")
            return Verdict(safe=False, categories=[], p_unsafe=None, parsed=False, raw=excerpt), False
        return decide(text, p_unsafe_from_logprobs(choice.get("logprobs")), self.threshold)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        prompts, responses = paired(prompts, responses)
        if not prompts:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts)))
        try:
            results = list(pool.map(self._judge_one, zip(prompts, responses)))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        verdicts = [v for v, _ in results]
        unparsed = sum(not v.parsed for v in verdicts)
        self.stats["judged"] += len(verdicts)
        self.stats["unparsed"] += unparsed
        self.stats["disagreements"] += sum(d for _, d in results)
        if unparsed:
            log.warning("%s: %d of %d replies unparsable (counted unsafe, parsed=False)", self.name, unparsed,
                        len(verdicts))
        return verdicts
