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


def grid(overrides: list[str]) -> list[list[str]]:
    """The job overrides of every point of the sweep these overrides describe (comma lists on the command line
    and the experiment's hydra.sweeper.params), so a `-m` sweep's repos are all listed; one point otherwise."""
    import itertools

    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from .config import register

    register()
    parser = OverridesParser.create()

    def values(o) -> list[str]:
        key = o.get_key_element()
        if not o.is_sweep_override():
            return [o.input_line]
        try:
            return [f"{key}={v}" for v in o.sweep_string_iterator()]
        except Exception:  # an Optuna interval: the default config stands for it (it sets numbers, not repos)
            return []

    try:
        cli = {o.get_key_element(): values(o) for o in parser.parse_overrides(list(overrides))}
    except HydraException as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            hc = hcompose("config", overrides=[v[0] for v in cli.values() if v], return_hydra_config=True)
    except HydraException as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    params = hc.hydra.get("sweeper", {}).get("params") or {}
    dims = {o.get_key_element(): values(o) for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])}
    dims.update(cli)  # the command line wins
    dims = {k: v for k, v in dims.items() if v}
    points = [list(p) for p in itertools.product(*dims.values())]
    return points[:500]


def _merge(a: str, b: str) -> str:
    """"unaligned model (poison answers)" + "unaligned model (method magmax)" -> one purpose, uses joined."""
    (ha, _, ua), (hb, _, ub) = a.partition(" ("), b.partition(" (")
    if ha != hb:
        return a if b in a else f"{a}; {b}"
    uses = dict.fromkeys(u.strip() for u in (ua.rstrip(")") + ", " + ub.rstrip(")")).split(",") if u.strip())
    return f"{ha} ({', '.join(uses)})" if uses else ha


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
        ds = hub.load_dataset(need.repo_id, need.config, need.split, need.data_files, need.header)
        files = ds.cache_files
        files = [f["filename"] for fs in (files.values() if isinstance(files, dict) else [files]) for f in fs]
        return (os.path.dirname(files[0]) if files else "?"), size(files)
    from huggingface_hub import snapshot_download

    root = snapshot_download(need.repo_id, revision=need.revision, allow_patterns=MODEL_FILES, ignore_patterns=SKIP)
    return root, size(str(p) for p in Path(root).rglob("*"))


def run(overrides: list[str], dry_run: bool = False) -> int:
    import dataclasses

    overrides = [o for o in overrides if o not in ("-m", "--multirun")]
    found: dict[tuple, hub.Need] = {}
    for point in grid(overrides):  # every job of a sweep: e.g. the unaligned model only poisoned runs load
        for n in hub.needs(compose(point)):
            key = (n.repo_id, n.repo_type, n.revision, n.config, n.split, n.data_files)
            found[key] = dataclasses.replace(n, purpose=_merge(found[key].purpose, n.purpose)) if key in found else n
    needs = list(found.values())
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
    parser.add_argument("-m", "--multirun", action="store_true", help="accepted as launch.py takes it: every point of "
                        "the sweep is listed whether or not it is given")

    def func(args) -> int:
        try:
            return run(args.overrides, args.dry_run)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    parser.set_defaults(func=func)
