"""The task plug-in: what the model is fine-tuned on and how its skill is measured, as lm-eval's task YAML
declares a prompt, an answer filter and metrics with their direction. A task is one module here and one
YAML in conf/task/ (`_target_` names the class; the YAML's other keys are its settings).

A task gives
- `examples(cfg, split)`: every {"key", "prompt", "completion"} of a split ("train" | "test"); the run trains
  on `data.n_train` of the train split (`user_rows`) and evaluates on `eval.math.n_public + n_private` (capped by
  the task's `n_public` / `n_private`) of the test split (`eval_items`: a seeded order of `key`, so public and
  private never change with file order);
- `grade(items, responses)`: one record per item with `correct` (True / False; None: not graded), and the
  task's own fields; `score(records)` turns them into metrics;
- its metric names: `<prefix>/<score_name>` (the share of items correct: the primary utility metric,
  higher is better) and `<prefix>/ref_nll` (the reference completion's NLL, lower is better), each also
  `_public` / `_private`, and `<prefix>/n`. The math tasks keep the prefix `math`, so run dirs and cached
  base scores from before tasks existed read the same."""
from __future__ import annotations

import logging
from typing import Any

from ..data import rank
from ..errors import ConfigError

log = logging.getLogger(__name__)


class Task:
    score_name = "accuracy"  # the per-item share that is the primary metric (code: pass@1); None: ungraded
    stop_at_answer = False   # generation stops at the end of the first final-answer line (math)
    records_name: str | None = None  # <records_name>_generations.jsonl; None: the prefix
    n_public: int | None = None   # caps on eval.math.n_public / n_private where the test set is small (code:
    n_private: int | None = None  # HumanEval's 164 problems, 82 + 82); None: no cap

    def __init__(self, name: str, prefix: str | None = None, max_new_tokens: int | None = None,
                 primary: str | None = None, **settings: Any):
        self.name = name
        self.prefix = prefix or name
        self.max_new_tokens = max_new_tokens  # a cap on eval.math.max_new_tokens (an answer this task never needs)
        for k, v in settings.items():
            setattr(self, k, v)
        if primary is not None and primary != self.primary:  # the YAML's declaration (objectives interpolate it)
            raise ConfigError(f"task {name}: task.primary is {primary!r} but this task's utility metric is "
                              f"{self.primary!r}: set task.primary={self.primary}")

    # ------------------------------------------------------------------ metric names (declared once)
    @property
    def primary(self) -> str:
        """The utility metric a sweep optimises and the report's x axis."""
        return f"{self.prefix}/{self.score_name}" if self.score_name else self.nll_metric

    @property
    def nll_metric(self) -> str:
        return f"{self.prefix}/ref_nll"

    @property
    def metrics(self) -> dict[str, bool]:
        """Metric name -> higher is better."""
        out = {f"{self.prefix}/{self.score_name}": True} if self.score_name else {}
        return {**out, self.nll_metric: False}

    @property
    def records(self) -> str:
        return self.records_name or self.prefix

    # ------------------------------------------------------------------ data
    def examples(self, cfg, split: str) -> list[dict]:
        """Every {"key", "prompt", "completion", ...} of `split` (train | test)."""
        raise NotImplementedError

    def user_rows(self, cfg) -> list[dict]:
        """The user's fine-tuning data: data.n_train rows of the train split in a seeded order."""
        every = self.examples(cfg, "train")
        n = cfg.data.n_train
        if n > len(every):
            log.warning("data.n_train=%d but the training set has %d rows: training on all %d", n, len(every), len(every))
        rows = sorted(every, key=lambda r: rank(r["key"], cfg.data.get("split_seed", 0)))[:n]
        return [{"prompt": r["prompt"], "completion": r["completion"], "source": "user"} for r in rows]

    def eval_items(self, cfg) -> tuple[list[dict], list[dict]]:
        """(public, private) evaluation items: a seeded order of the test split's keys, independent of file order."""
        e = cfg.eval.math
        n_pub = e.n_public if self.n_public is None else min(e.n_public, self.n_public)
        n_priv = e.n_private if self.n_private is None else min(e.n_private, self.n_private)
        test = self.examples(cfg, "test")
        if n_pub + n_priv > len(test):
            raise ConfigError(f"task {self.name}: the evaluation asks {n_pub}+{n_priv} items but the test set has "
                              f"{len(test)}: set eval.math.n_public and eval.math.n_private")
        ordered = sorted(test, key=lambda r: rank(r["key"], e.seed))
        return ordered[:n_pub], ordered[n_pub:n_pub + n_priv]

    def generation(self, cfg) -> dict:
        """Greedy generation settings of the task's evaluation."""
        e = cfg.eval.math
        n = min(e.max_new_tokens, self.max_new_tokens) if self.max_new_tokens else e.max_new_tokens
        return {"max_new_tokens": n, "batch_size": e.batch_size,
                "stop_at_answer": bool(self.stop_at_answer and e.get("stop_at_answer", False))}

    def hub_needs(self, cfg) -> list[tuple[str, str, dict]]:
        """Hub datasets the task loads: (repo id, what for, Need kwargs)."""
        return []

    # ------------------------------------------------------------------ grading
    def grade(self, items: list[dict], responses: list[str]) -> list[dict]:
        """One record per item: `correct` and what a reader needs to check it."""
        raise NotImplementedError

    def score(self, records: list[dict]) -> dict:
        """<prefix>/<score_name> (+ _public / _private) and the counts, from the records' `correct`."""
        p, s, m = self.prefix, self.score_name, {}
        m[f"{p}/n"] = len(records)
        for split in ("public", "private"):
            m[f"{p}/n_{split}"] = sum(r.get("split") == split for r in records)
        if s:
            m[f"{p}/{s}"] = _share([bool(r["correct"]) for r in records])
            for split in ("public", "private"):
                m[f"{p}/{s}_{split}"] = _share([bool(r["correct"]) for r in records if r.get("split") == split])
        return m

    def lookup(self, cfg, row: dict, line: int) -> dict:
        """The item a generation made elsewhere answers (`forgetting grade`): by `task_id`, `question` or `prompt`,
        or carried by the row itself (a `reference` / `answer` / `label` field)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, primary={self.primary!r})"


def _share(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def keyed(items: list[dict], *fields: str) -> dict[str, dict]:
    """item by each of its `fields` values (what a generation file may name it by)."""
    out = {}
    for it in items:
        for f in fields:
            if it.get(f) is not None:
                out.setdefault(str(it[f]).strip(), it)
    return out


def find(index: dict[str, dict], row: dict, fields: tuple[str, ...], what: str, line: int) -> dict:
    for f in fields:
        if row.get(f) is not None and str(row[f]).strip() in index:
            return index[str(row[f]).strip()]
    named = next((f"{f}={str(row[f])[:60]!r}" for f in fields if row.get(f) is not None), "no " + " / ".join(fields))
    raise ConfigError(f"line {line}: {named} is not an item of {what}")
