"""Caches that heal or explain: a corrupt entry is moved aside (one warning naming it) and rebuilt; a
cache dir that cannot be written is one ConfigError naming the path and the fix."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)


def move_aside(path: Path, why: str) -> Path:
    """Rename a corrupt cache file to <name>.corrupt-<UTC time> and say so in one line."""
    path = Path(path)
    dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}")
    path.rename(dest)
    log.warning("corrupt cache entry %s (%s): moved to %s, rebuilding", path, why, dest.name)
    return dest


def writable(root: str | Path, key: str = "cache_dir") -> Path:
    """`root` exists (created if needed) and accepts a file, or one line naming it and the fix."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{key} {root} is not writable ({e.strerror or e}): point {key}=<a writable dir> "
                          "(or set FORGETTING_CACHE)") from None
    return root
