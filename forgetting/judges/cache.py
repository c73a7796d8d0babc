"""A persistent verdict cache around any judge, safe on a shared filesystem: each process appends to
its own shard, <dir>/<host>-<pid>-<token>.jsonl, and reads every shard (SQLite's WAL is unsafe across
hosts on a network filesystem; a file with one writer needs no lock). A line is {"k": key, "v": verdict},
key = sha256(judge identity, prompt, response); shards are read incrementally (only the bytes added since
the last call), a line still being written is read on the next call. A verdicts.sqlite beside the dir (the
earlier cache) is read once, read-only.

The identity is `judge.identity` when the judge has one (the Llama Guard judges put model, version,
threshold, categories... in it) and `judge.name` otherwise. Only the misses of a call go to the inner
judge, in one call, each distinct pair once. A call that raises stores nothing."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import sqlite3
import threading
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError
from .base import Verdict, paired

log = logging.getLogger(__name__)
DEFAULT_PATH = Path("outputs/cache/verdicts")
_TOKEN: dict[int, str] = {}  # pid -> its shard's token (a reused pid gets a new shard)


def judge_identity(judge) -> str:
    ident = getattr(judge, "identity", None)
    return str(ident) if ident else str(judge.name)


def cache_key(identity: str, prompt: str, response: str) -> str:
    return hashlib.sha256(json.dumps([identity, prompt, response], ensure_ascii=False).encode()).hexdigest()


def shard_name() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}-{pid}-{_TOKEN.setdefault(pid, secrets.token_hex(3))}.jsonl"


class CachedJudge:
    def __init__(self, judge, path: str | Path | None = None):
        self.judge = judge
        self.name = judge.name
        self.path = Path(path) if path is not None else DEFAULT_PATH  # the shards' dir
        self.stats = {"hits": 0, "misses": 0}
        self._lock = threading.Lock()
        self._index: dict[str, dict] = {}
        self._offsets: dict[str, int] = {}  # shard -> bytes read
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._unwritable(e)
        self._read_legacy(self.path.with_suffix(".sqlite"))
        with self._lock:
            self._refresh()

    @property
    def identity(self) -> str:
        return judge_identity(self.judge)

    def _unwritable(self, e: OSError):
        raise ConfigError(f"verdict cache {self.path} cannot be written ({e.strerror or e}): point cache_dir at a "
                          "writable dir, or judge_cache=false") from None

    def _read_legacy(self, db: Path):
        if not db.is_file():
            return
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                self._index.update((k, json.loads(v)) for k, v in conn.execute("SELECT key, verdict FROM verdicts"))
        except (sqlite3.Error, ValueError) as e:
            log.warning("earlier verdict cache %s not read (%s)", db, e)

    def _refresh(self):
        for shard in self.path.glob("*.jsonl"):
            start = self._offsets.get(shard.name, 0)
            try:
                with open(shard, "rb") as f:
                    f.seek(start)
                    data = f.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1  # complete lines only
            bad = 0
            for line in data[:end].splitlines():
                try:
                    rec = json.loads(line)
                    self._index[rec["k"]] = rec["v"]
                except (ValueError, KeyError, TypeError):
                    bad += 1
            if bad:
                log.warning("corrupt cache entry %s (%d unreadable lines): skipped, their verdicts recomputed",
                            shard, bad)
            self._offsets[shard.name] = start + end

    def _store(self, items: dict[str, Verdict]):
        lines = "".join(json.dumps({"k": k, "v": v.to_dict()}, ensure_ascii=False) + "\n" for k, v in items.items())
        try:
            with open(self.path / shard_name(), "a", encoding="utf-8") as f:  # closed: visible to other hosts
                f.write(lines)
        except OSError as e:
            self._unwritable(e)
        self._index.update((k, v.to_dict()) for k, v in items.items())

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        prompts, responses = paired(prompts, responses)
        if not prompts:
            return []
        identity = self.identity
        keys = [cache_key(identity, p, r) for p, r in zip(prompts, responses)]
        with self._lock:
            self._refresh()
            found = {k: Verdict(**self._index[k]) for k in set(keys) if k in self._index}
        todo: dict[str, tuple[str, str]] = {}
        for k, p, r in zip(keys, prompts, responses):
            if k not in found and k not in todo:
                todo[k] = (p, r)
        self.stats["hits"] += sum(k in found for k in keys)
        self.stats["misses"] += len(keys) - sum(k in found for k in keys)
        if todo:
            new = self.judge([p for p, _ in todo.values()], [r for _, r in todo.values()])
            if len(new) != len(todo):
                raise RuntimeError(f"{self.name}: judge returned {len(new)} verdicts for {len(todo)} pairs")
            fresh = dict(zip(todo, new))
            with self._lock:
                self._store(fresh)
            found.update(fresh)
        return [Verdict(**found[k].to_dict()) for k in keys]  # copies: callers may mutate

    def close(self):  # nothing held open between calls
        pass
