"""`forgetting grade --task T FILE.jsonl [overrides]`: grade generations made elsewhere (vLLM, another
harness) with a task's own grader. One JSON object a line: what the item is (`task_id` for code, `question`
for math, `sentence` or `prompt` for sst2 / jsonl; or the row carries its own `answer` / `label` /
`reference`) and the model's `completion` (or `response`). Prints one line per failed item with -v, then the
last line `<metric>: <correct>/<total>` (math/accuracy, sst2/accuracy, code/pass@1, ...). The task's other
settings come from the overrides, as for a run (e.g. data=arith, task.source=hub)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import json_lines
from .errors import ConfigError

TASKS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "task").glob("*.yaml"))


def read_rows(path: str | Path) -> list[tuple[int, dict]]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"generations file not found: {p}")
    rows = []
    for i, r in json_lines(p):
        if not isinstance(r, dict) or not isinstance(r.get("completion", r.get("response")), str):
            raise ConfigError(f"{p}:{i}: a row needs a 'completion' (or 'response') string")
        rows.append((i, r))
    if not rows:
        raise ConfigError(f"{p}: no rows")
    return rows


def grade_file(task_name: str, path: str | Path, overrides: list[str] = ()) -> tuple[dict, list[dict], str]:
    """→ (metrics, records, the metric graded) for a file of generations."""
    from .download import compose
    from .tasks import build

    cfg = compose([f"task={task_name}", *overrides])
    task = build(cfg)
    if not task.score_name:
        raise ConfigError(f"task {task_name} has no grader (task.metric=none): nothing to grade")
    rows = read_rows(path)
    items = [task.lookup(cfg, r, i) for i, r in rows]
    records = task.grade(items, [r.get("completion", r.get("response")) for _, r in rows])
    return task.score(records), records, f"{task.prefix}/{task.score_name}"


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--task", required=True, choices=TASKS, help="the task whose grader to use")
    p.add_argument("file", help="JSONL: one object a line with task_id / question / sentence / prompt and completion")
    p.add_argument("overrides", nargs="*", help="config overrides for the task (data=arith, task.train_path=...)")
    p.add_argument("-v", "--verbose", action="store_true", help="print each wrong item")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    try:
        metrics, records, metric = grade_file(args.task, args.file, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.verbose:
        for r in records:
            if not r["correct"]:
                who = r.get("task_id") or r.get("question") or r.get("sentence") or r.get("prompt") or "?"
                print(f"wrong: {str(who)[:80]!r} -> {str(r.get('extracted', r.get('response')))[:80]!r}")
    correct = sum(bool(r["correct"]) for r in records)
    print(f"{metric}: {correct}/{len(records)}")
    return 0
