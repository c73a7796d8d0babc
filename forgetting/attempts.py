"""A run's lifecycle on disk, so a sweep never loses or double-counts work: signals that mark a run
interrupted (with the stage it was in), earlier attempts set aside, a finished twin found anywhere in
the sweep dir by its config hash, and `running` records whose process is gone."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
from contextlib import contextmanager
from pathlib import Path

from .resume import finished

# what one attempt writes into its run dir (Hydra's .hydra/ and job log stay: they belong to the job)
ATTEMPT_FILES = ("metrics.json", "error.txt", "train_log.jsonl", "epoch_metrics.jsonl", "resolved_config.yaml",
                 "poison_rows.jsonl", "math_generations.jsonl", "safety_generations.jsonl",
                 "over_refusal_generations.jsonl", "harmful_generations.jsonl", "adapter", "trainer", "wandb")
ATTEMPTS = "attempts"


class Interrupted(BaseException):
    """SIGINT / SIGTERM reached a run (a BaseException: `except Exception` must not swallow it)."""

    def __init__(self, signame: str):
        super().__init__(signame)
        self.signame = signame


@contextmanager
def signals():
    """SIGINT and SIGTERM (SLURM's pre-emption and time-out) raise Interrupted inside the run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def gone(record: dict) -> bool:
    """A `running` record whose process no longer exists (only decidable on the same host)."""
    if record.get("status") != "running" or record.get("host") != socket.gethostname() or not record.get("pid"):
        return False
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, another user's
        return False
    return False


def set_aside(run_dir: Path) -> Path | None:
    """Move an earlier attempt's files into attempts/<n>/ so the new attempt's logs and W&B run stand alone."""
    present = [run_dir / f for f in ATTEMPT_FILES if (run_dir / f).exists()]
    present += [p for p in sorted(run_dir.glob("*_generations.jsonl")) if p not in present]  # any task's (sst2, code)
    if not present:
        return None
    n = 1
    while (run_dir / ATTEMPTS / str(n)).exists():
        n += 1
    dest = run_dir / ATTEMPTS / str(n)
    dest.mkdir(parents=True)
    for p in present:
        shutil.move(str(p), dest / p.name)
    return dest


def twin(sweep_dir: Path, run_dir: Path, chash: str) -> tuple[Path, dict] | None:
    """Another run dir of the sweep that finished the same configuration (a grown or reordered grid)."""
    for m in sorted(sweep_dir.glob("*/metrics.json")):
        if m.parent.resolve() == run_dir.resolve():
            continue
        rec = finished(m.parent, chash)
        if rec is not None:
            return m.parent, rec
    return None


def keep_history(sweep_dir: Path) -> Path | None:
    """Copy an existing multirun.yaml to multirun_history/<n>.yaml before a rerun overwrites it."""
    current = Path(sweep_dir) / "multirun.yaml"
    if not current.is_file():
        return None
    hist = Path(sweep_dir) / "multirun_history"
    hist.mkdir(exist_ok=True)
    n = len(list(hist.glob("*.yaml"))) + 1
    dest = hist / f"{n}.yaml"
    shutil.copy2(current, dest)
    return dest


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object


class KeepMultirunHistory(Callback):
    """Hydra callback (hydra.callbacks in conf/config.yaml): runs before the sweeper writes multirun.yaml."""

    def on_multirun_start(self, config, **kwargs) -> None:
        keep_history(Path(str(config.hydra.sweep.dir)))
