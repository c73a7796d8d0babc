"""Skip finished runs when a grid sweep is rerun into the same sweep dir.

A run is finished when ``<run_dir>/metrics.json`` says ``"status": "ok"`` and carries the
same ``config_hash`` as the config about to run. At the start of a run::

    chash = config_hash(cfg)
    done = finished(run_dir, chash)
    if done is not None:
        return objectives_from(done["metrics"])   # skip: same config, already measured
    ...
    write_metrics(run_dir, "ok", metrics=..., config_hash=chash)   # or json.dump yourself,
                                                                   # with "config_hash": chash

The hash covers the resolved job config minus what cannot change the results
(``IGNORED_KEYS``: the ``hydra`` node, the logger settings, the thread count, the hub's offline switch); any other
change, a changed default included, reruns the job.
"""
from __future__ import annotations

import enum
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from omegaconf import OmegaConf

METRICS_FILE = "metrics.json"

#: Dotted paths dropped before hashing: they do not change what a run computes.
#: (``threads`` only sets the CPU thread count: launchers change it, results do not depend on it.)
IGNORED_KEYS: tuple[str, ...] = ("hydra", "logger", "loggers", "logging", "wandb", "threads", "train_cache", "hub")


def _plain(cfg: Any) -> Any:
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    if isinstance(cfg, Mapping):
        return {k: _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg


def _drop(container: Any, path: str) -> None:
    *parents, last = path.split(".")
    node = container
    for key in parents:
        if not isinstance(node, dict) or key not in node:
            return
        node = node[key]
    if isinstance(node, dict):
        node.pop(last, None)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, (Path, bytes)):
        return str(obj)
    raise TypeError(f"config value of type {type(obj).__name__} is not hashable as JSON: {obj!r}")


def canonical_json(cfg: Any, ignore: Iterable[str] = IGNORED_KEYS) -> str:
    """The resolved config without the ignored keys, as JSON with sorted keys."""
    container = _plain(cfg)
    if isinstance(container, dict):
        for path in ignore:
            _drop(container, path)
    return json.dumps(container, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_json_default)


def config_hash(cfg: Any, ignore: Iterable[str] = IGNORED_KEYS) -> str:
    """sha256 (hex) of the canonical JSON of the resolved job config minus ``ignore``.

    ``cfg`` is a DictConfig (interpolations are resolved: call it inside the job, where
    ``${hydra:...}`` resolves) or a plain dict. Resolution happens before the ignored keys are
    dropped, so a value interpolated from the logger settings still counts."""
    return hashlib.sha256(canonical_json(cfg, ignore).encode("utf-8")).hexdigest()


def read_metrics(run_dir: str | os.PathLike) -> Optional[dict]:
    """The parsed ``<run_dir>/metrics.json``, or None when missing or unreadable."""
    try:
        data = json.loads((Path(run_dir) / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finished(run_dir: str | os.PathLike, config_hash: str) -> Optional[dict]:
    """The saved record (the whole ``metrics.json``: ``status``, ``metrics``, ``config_hash``,
    ...) when ``<run_dir>/metrics.json`` has status ok and this config_hash; None otherwise
    (no file, unreadable, running, failed, another config). ``finished(...)["metrics"]`` are
    the saved metrics."""
    data = read_metrics(run_dir)
    if data is None or data.get("status") != "ok" or data.get("config_hash") != config_hash:
        return None
    if not isinstance(data.get("metrics"), dict):
        return None
    return data


def write_metrics(run_dir: str | os.PathLike, status: str, *, metrics: Optional[dict] = None,
                  reason: Optional[str] = None, config_hash: Optional[str] = None,
                  **extra: Any) -> Path:
    """Write ``<run_dir>/metrics.json`` atomically (a killed job never leaves half a file)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"status": status, "reason": reason, "metrics": metrics or {},
            "config_hash": config_hash, **extra}
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".metrics.", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=_json_default)
        os.replace(tmp, run_dir / METRICS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return run_dir / METRICS_FILE
