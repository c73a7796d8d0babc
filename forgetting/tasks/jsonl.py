"""Your own data: a JSONL file of {"prompt", "response"} (or "completion") rows, or TRL's conversational
format {"messages": [{"role", "content"}, ...]} (the last user turn is the prompt, the assistant turn after
it the response; a system turn is kept in front of the prompt). metric: exact (the response, stripped and
case-folded, equals the reference), contains (the reference is in the response, case-folded) or none (no
grading: the utility metric is the reference NLL, <prefix>/ref_nll, lower is better).

test_path: the evaluation rows; null holds out a fifth of train_path by a hash of each prompt (disjoint)."""
from __future__ import annotations

import hashlib

from ..data import json_lines, resolve
from ..errors import ConfigError
from .base import Task, find, keyed

METRICS = {"exact": "exact_match", "contains": "contains", "none": None}


def read(path: str, prompt_field: str = "prompt", response_field: str = "response") -> list[dict]:
    """[{"prompt", "response"}] from a JSONL file of either format; one line naming the file and line if a row is bad."""
    p = resolve(path)
    if not p.is_file():
        raise ConfigError(f"task.train_path / test_path file not found: {p}")
    rows = []
    for i, r in json_lines(p):
        if isinstance(r, dict) and isinstance(r.get("messages"), list):
            pair = from_messages(r["messages"])
            if pair is None:
                raise ConfigError(f"{p}:{i}: 'messages' needs a user turn followed by an assistant turn")
            rows.append(pair)
            continue
        resp = r.get(response_field, r.get("completion")) if isinstance(r, dict) else None
        if not isinstance(r, dict) or not str(r.get(prompt_field) or "").strip() or resp is None:
            raise ConfigError(f"{p}:{i}: a row needs '{prompt_field}' and '{response_field}' (or 'completion'), "
                              "or 'messages'")
        rows.append({"prompt": str(r[prompt_field]).strip(), "response": str(resp).strip()})
    if not rows:
        raise ConfigError(f"{p}: no rows")
    return rows


def from_messages(messages: list[dict]) -> dict | None:
    turns = [(str(m.get("role")), str(m.get("content") or "")) for m in messages if isinstance(m, dict)]
    last = max((i for i, (role, _) in enumerate(turns) if role == "assistant"), default=None)
    if last is None or last == 0 or turns[last - 1][0] != "user":
        return None
    system = "\n\n".join(c for role, c in turns[:last - 1] if role == "system")
    prompt = f"{system}\n\n{turns[last - 1][1]}" if system else turns[last - 1][1]
    return {"prompt": prompt.strip(), "response": turns[last][1].strip()}


def _held_out(text: str) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 5 == 0


class JSONL(Task):
    train_path: str | None = None
    test_path: str | None = None
    prompt_field = "prompt"
    response_field = "response"
    metric = "exact"  # exact | contains | none

    def __init__(self, name: str = "jsonl", prefix: str | None = None, metric: str = "exact", **settings):
        if metric not in METRICS:
            raise ConfigError(f"task.metric must be one of {sorted(METRICS)}, got {metric!r}")
        self.score_name = METRICS[metric]
        super().__init__(name, prefix, metric=metric, **settings)

    def examples(self, cfg, split: str) -> list[dict]:
        if not self.train_path:
            raise ConfigError("task=jsonl needs task.train_path=FILE.jsonl (prompt/response rows or TRL messages)")
        if split == "test" and self.test_path:
            rows = read(self.test_path, self.prompt_field, self.response_field)
        else:
            rows = [r for r in read(self.train_path, self.prompt_field, self.response_field)
                    if self.test_path or _held_out(r["prompt"]) == (split == "test")]
        return [{"key": r["prompt"], "prompt": r["prompt"], "completion": r["response"]} for r in rows]

    def correct(self, response: str, reference: str) -> bool | None:
        got, ref = response.strip().casefold(), reference.strip().casefold()
        if self.metric == "exact":
            return got == ref
        if self.metric == "contains":
            return ref in got
        return None

    def grade(self, items: list[dict], responses: list[str]) -> list[dict]:
        return [{"split": it.get("split"), "prompt": it["prompt"], "reference": it["completion"], "response": resp,
                 "correct": self.correct(resp, it["completion"])} for it, resp in zip(items, responses)]

    def lookup(self, cfg, row: dict, line: int) -> dict:
        ref = row.get("reference", row.get("response"))
        if ref is not None and row.get("prompt") is not None:
            return {"prompt": str(row["prompt"]), "completion": str(ref)}
        if not hasattr(self, "_index"):
            self._index = keyed(self.examples(cfg, "test") + self.examples(cfg, "train"), "prompt")
        return find(self._index, row, ("prompt", "question"), f"{self.train_path} (nor does the row carry a "
                    "'reference')", line)
