"""`make sync`: upload every offline W&B run, wherever it is: outputs/ (sweeps and runs hold theirs), the
cache dir (FORGETTING_CACHE) and WANDB_DIR, plus any folders named; never an earlier attempt's (attempts/).

    python -m forgetting.wandb_sync [DIR ...] [--dry-run]

`wandb sync` itself skips runs it uploaded before (their .wandb.synced marker)."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def roots(extra: list[str] = ()) -> list[Path]:
    cache = os.environ.get("FORGETTING_CACHE", "outputs/cache")
    out = {}
    for r in ["outputs", cache, os.environ.get("WANDB_DIR") or "", *extra]:
        if r and Path(r).is_dir():
            out.setdefault(Path(r).resolve(), None)
    return list(out)


def offline_runs(dirs: list[Path]) -> list[Path]:
    """Every offline-run-* folder under dirs, not inside attempts/; each once."""
    found = {}
    for d in dirs:
        for root, subdirs, _ in os.walk(d):
            for s in [s for s in subdirs if s.startswith("offline-run-")]:
                found.setdefault(Path(root, s).resolve(), None)
            subdirs[:] = [s for s in subdirs if s != "attempts" and not s.startswith("offline-run-")]
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m forgetting.wandb_sync", description=__doc__.split("\n")[0])
    p.add_argument("dirs", nargs="*", help="more folders to search (a sweep dir outside outputs/, ...)")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    args = p.parse_args(argv)
    from . import env

    env.setup()  # the same WANDB_DIR default a run gets
    runs = offline_runs(roots(args.dirs))
    if not runs:
        print("no offline W&B runs found under: " + ", ".join(map(str, roots(args.dirs))))
        return 0
    cmd = [sys.executable, "-m", "wandb", "sync", *(["--dry-run"] if args.dry_run else []), *map(str, runs)]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
