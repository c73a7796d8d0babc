"""Logging the report's tables and images to a W&B run."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .runs import SIM_NOTE, _ordered_union


def _typed_columns(rows: list[dict]) -> tuple[list[str], list[list]]:
    """Rows (from report or read back from CSV) -> W&B table columns with one type each (float or str)."""
    cols = _ordered_union(rows)

    def num(v):
        if isinstance(v, bool):
            return None
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    def empty(v):
        return v is None or v == ""

    numeric = {c: all(empty(r.get(c)) or num(r.get(c)) is not None for r in rows) for c in cols}
    data = [[None if empty(r.get(c)) else num(r.get(c)) if numeric[c] else str(r.get(c)) for c in cols] for r in rows]
    return cols, data


def log_to_wandb(paths: dict[str, Path], rows: list[dict], project: str = "forgetting", group: str | None = None,
                 **init_kwargs) -> str:
    """Log the tradeoff table and the report images to one W&B run; returns the run's local dir.
    Works offline (WANDB_MODE=offline)."""
    import wandb

    cols, data = _typed_columns(rows)
    with wandb.init(project=project, group=group, job_type="report", **init_kwargs) as run:
        payload: dict[str, Any] = {"report/tradeoff": wandb.Table(columns=cols, data=data)}
        for name, p in paths.items():
            p = Path(p)
            if p.suffix == ".png" and p.exists():
                payload[f"report/{p.stem}"] = wandb.Image(str(p), caption=p.stem)
            elif p.suffix == ".csv" and p.exists() and p.name != "tradeoff.csv":
                with open(p, newline="", encoding="utf-8") as f:
                    c2, d2 = _typed_columns(list(csv.DictReader(f)))
                payload[f"report/{p.stem}"] = wandb.Table(columns=c2, data=d2)
        run.log(payload)
        if any(r.get("note") for r in rows):
            run.summary["note"] = SIM_NOTE
        run_dir = str(Path(run.dir).parent)
    return run_dir
