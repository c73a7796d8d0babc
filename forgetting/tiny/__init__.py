"""The offline tiny preset: a small Llama + BPE tokenizer, trained and safety-aligned from a recipe,
built once per recipe under `cache_root/<name>-<hash>/` and reused afterwards.

    from forgetting.tiny import build
    path = build(recipe, cache_root)   # loads with AutoTokenizer / AutoModelForCausalLM
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

DONE = "build_report.json"  # written last: its presence marks a complete build
_ANNOUNCED: set[str] = set()


def _announce(path: Path, built: bool) -> None:
    """Say once per process where the preset lives."""
    if str(path) not in _ANNOUNCED:
        _ANNOUNCED.add(str(path))
        print(f"[forgetting.tiny] preset {'built' if built else 'cached'} at {path}", file=sys.stderr, flush=True)


def as_dict(recipe) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(recipe, DictConfig):
            return OmegaConf.to_container(recipe, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover
        pass
    return json.loads(json.dumps(dict(recipe)))


def code_version() -> str:
    """Hash of the builder's own sources: a change to how presets are built never reuses a stale one."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def recipe_hash(recipe) -> str:
    canon = json.dumps({"recipe": as_dict(recipe), "code": code_version()}, sort_keys=True, separators=(",", ":"),
                       ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()[:12]


def preset_dir(recipe, cache_root: str | Path) -> Path:
    r = as_dict(recipe)
    return Path(cache_root) / f"{r.get('name', 'preset')}-{recipe_hash(r)}"


def build(recipe, cache_root: str | Path) -> Path:
    """The preset directory for `recipe`, building it first if it is not cached yet."""
    r = as_dict(recipe)
    final = preset_dir(r, cache_root)
    if (final / DONE).exists():
        _announce(final, built=False)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the build done
        if (final / DONE).exists():
            _announce(final, built=False)
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            from .builder import build_into

            build_into(r, tmp)
            if final.exists():  # an incomplete leftover (no report): replace it
                shutil.rmtree(final)
            os.chmod(tmp, 0o755)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _announce(final, built=True)
    return final
