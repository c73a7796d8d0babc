"""GSM8K and arith (generated word problems in GSM8K's format): the math tasks. Their data settings stay in
`data` (data=gsm8k | arith, data.source local | hub | arith), as before tasks existed, so every old command
composes the same run; their metrics keep the `math/` prefix (math/accuracy, math/ref_nll)."""
from __future__ import annotations

from .. import data
from ..math import extract_answer, is_correct
from .base import Task, find, keyed


class MathTask(Task):
    stop_at_answer = True

    def __init__(self, name: str = "gsm8k", prefix: str = "math", **settings):
        super().__init__(name, prefix, **settings)

    def examples(self, cfg, split: str) -> list[dict]:
        return [self.item(r, cfg.data) for r in data.load_gsm8k(cfg.data, split)]

    @staticmethod
    def item(row: dict, d) -> dict:
        """A GSM8K-format row {"question", "answer"} as a task item (`data` settings: prompt_template, strip_calculator)."""
        return {"key": row["question"], "question": row["question"], "answer": row["answer"],
                "prompt": d.prompt_template.format(question=row["question"]),
                "completion": data.solution_text(row["answer"], d.get("strip_calculator", True))}

    def grade(self, items: list[dict], responses: list[str]) -> list[dict]:
        return [{"split": it.get("split"), "question": it["question"], "reference": extract_answer(it["answer"]),
                 "response": resp, "extracted": extract_answer(resp), "correct": is_correct(resp, it["answer"])}
                for it, resp in zip(items, responses)]

    def lookup(self, cfg, row: dict, line: int) -> dict:
        ref = row.get("answer", row.get("reference"))
        if ref is not None:  # the row carries its gold answer (`#### N` or a bare number)
            q = str(row.get("question") or row.get("prompt") or "")
            return {"question": q, "answer": str(ref)}
        if not hasattr(self, "_index"):
            self._index = keyed(self.examples(cfg, "test") + self.examples(cfg, "train"), "question", "prompt")
        return find(self._index, row, ("question", "prompt"), f"{self.name} (nor does the row carry an 'answer')", line)
