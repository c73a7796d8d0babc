"""`forgetting download <overrides>`: fetch everything the config those overrides compose needs from the hub
(policy model, its unaligned model, judge, hub datasets) into your hub cache, so the same config then runs
offline, e.g. on a compute node without internet (HF_HUB_OFFLINE=1). `--dry-run` lists the repos only."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import hub
from .errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
# What transformers loads: config, safetensors weights (and their index), tokenizer files, chat template
MODEL_FILES = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]
SKIP = ["original/*"]  # Meta's own consolidated checkpoints beside the transformers weights


def compose(overrides: list[str]):
    """The run config launch.py would compose from these overrides, validated."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    from .config import register, validate

    register()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hcompose("config", overrides=list(overrides))
    except HydraException as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    validate(cfg)
    return cfg


def size(paths) -> int:
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p))  # follows the cache's symlinks to blobs


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def fetch(need: hub.Need) -> tuple[str, int]:
    """Download one repo into the hub cache (datasets: into the datasets cache, the way data.py loads them)
    → (where, bytes)."""
    if need.repo_type == "dataset":
        ds = hub.load_dataset(need.repo_id, need.config, need.split)
        files = ds.cache_files
        files = [f["filename"] for fs in (files.values() if isinstance(files, dict) else [files]) for f in fs]
        return (os.path.dirname(files[0]) if files else "?"), size(files)
    from huggingface_hub import snapshot_download

    root = snapshot_download(need.repo_id, revision=need.revision, allow_patterns=MODEL_FILES, ignore_patterns=SKIP)
    return root, size(str(p) for p in Path(root).rglob("*"))


def run(overrides: list[str], dry_run: bool = False) -> int:
    cfg = compose(overrides)
    needs = hub.needs(cfg)
    if not needs:
        print("nothing to download: this config needs nothing from the hub (it runs offline)")
        return 0
    from huggingface_hub import constants

    width = max(len(n.repo_id) for n in needs)
    print(f"{len(needs)} hub repo(s) for this config (hub cache: {constants.HF_HUB_CACHE}):")
    if dry_run:
        for n in needs:
            rev = f" @ {n.revision}" if n.revision else ""
            print(f"  {n.repo_id:<{width}}  {n.repo_type:<7}  {n.purpose}{rev}")
        return 0
    hub.set_offline(False)  # asked to download: the hub is reachable or this fails with a one-line reason
    failed = 0
    for n in needs:
        try:
            where, nbytes = fetch(n)
        except Exception as e:
            msg = (hub.explain(n.repo_id, e, "run this on a machine that reaches huggingface.co (or HF_ENDPOINT)")
                   or f"{n.repo_id}: {type(e).__name__}: {e}".splitlines()[0])
            print(f"  error: {msg}", file=sys.stderr)
            failed += 1
            continue
        print(f"  {n.repo_id:<{width}}  {n.purpose}: {human(nbytes)}  {where}")
    if failed:
        print(f"{failed} of {len(needs)} not downloaded", file=sys.stderr)
    return 1 if failed else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as given to launch.py (e.g. experiment=seed000)")
    parser.add_argument("--dry-run", action="store_true", help="list the repo ids and what each is for; no network")

    def func(args) -> int:
        try:
            return run(args.overrides, args.dry_run)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    parser.set_defaults(func=func)
