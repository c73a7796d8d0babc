"""A persistent verdict cache around any judge: SQLite (WAL, short transactions, safe for several
processes). Key = sha256(judge identity, prompt, response); value = the Verdict as JSON.

The identity is `judge.identity` when the judge has one (the Llama Guard judges put model, version,
threshold, categories... in it) and `judge.name` otherwise. Only the misses of a call go to the inner
judge, in one call, each distinct pair once. A call that raises stores nothing."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Sequence

from ..caches import move_aside
from ..errors import ConfigError
from .base import Verdict, paired

DEFAULT_PATH = Path("outputs/cache/verdicts.sqlite")
_CHUNK = 500  # keys per SELECT (SQLite's variable limit is >= 999)


def judge_identity(judge) -> str:
    ident = getattr(judge, "identity", None)
    return str(ident) if ident else str(judge.name)


def cache_key(identity: str, prompt: str, response: str) -> str:
    return hashlib.sha256(json.dumps([identity, prompt, response], ensure_ascii=False).encode()).hexdigest()


class CachedJudge:
    def __init__(self, judge, path: str | Path | None = None):
        self.judge = judge
        self.name = judge.name
        self.path = Path(path) if path is not None else DEFAULT_PATH
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stats = {"hits": 0, "misses": 0}
        self._lock = threading.Lock()
        self._conn = None
        self._pid = None
        with self._lock:
            self._connection()

    @property
    def identity(self) -> str:
        return judge_identity(self.judge)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, identity TEXT NOT NULL, "
                         "verdict TEXT NOT NULL, created REAL NOT NULL)")
            conn.execute("SELECT key, verdict FROM verdicts LIMIT 1").fetchall()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a forked child opens its own
            try:
                conn = self._open()
            except sqlite3.OperationalError as e:
                if "readonly" in str(e) or "unable to open" in str(e):
                    raise ConfigError(f"verdict cache {self.path} cannot be written ({e}): point cache_dir at a "
                                      "writable dir, or judge_cache=false") from None
                raise
            except sqlite3.DatabaseError as e:  # garbage in the file: set it aside, start a fresh cache
                for extra in (Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                    extra.unlink(missing_ok=True)
                move_aside(self.path, str(e))
                conn = self._open()
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _lookup(self, keys: list[str]) -> dict[str, Verdict]:
        found = {}
        conn = self._connection()
        for i in range(0, len(keys), _CHUNK):
            part = keys[i:i + _CHUNK]
            rows = conn.execute(f"SELECT key, verdict FROM verdicts WHERE key IN ({','.join('?' * len(part))})",
                                part).fetchall()
            for k, v in rows:
                found[k] = Verdict(**json.loads(v))
        return found

    def _store(self, identity: str, items: dict[str, Verdict]):
        conn = self._connection()
        now = time.time()
        rows = [(k, identity, json.dumps(v.to_dict(), ensure_ascii=False), now) for k, v in items.items()]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR REPLACE INTO verdicts (key, identity, verdict, created) "
                             "VALUES (?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        prompts, responses = paired(prompts, responses)
        if not prompts:
            return []
        identity = self.identity
        keys = [cache_key(identity, p, r) for p, r in zip(prompts, responses)]
        with self._lock:
            found = self._lookup(sorted(set(keys)))
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
                self._store(identity, fresh)
            found.update(fresh)
        return [Verdict(**found[k].to_dict()) for k in keys]  # copies: callers may mutate

    def close(self):
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
