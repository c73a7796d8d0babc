"""Datasets: GSM8K, AILuminate prompt sets and XSTest, read from vendored files (or the hub),
validated row by row, and split deterministically into public / private evaluation sets."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Iterable

from .errors import ConfigError

ASSETS = Path(__file__).parent / "assets"
AILUMINATE_COLUMNS = ("release_prompt_id", "prompt_text", "hazard", "persona", "locale", "prompt_hash")


def resolve(path: str | Path) -> Path:
    """`pkg://x/y` → the vendored file forgetting/assets/x/y; anything else is a normal path."""
    p = str(path)
    if p.startswith("pkg://"):
        return ASSETS / p[len("pkg://"):]
    return Path(p).expanduser()


def _existing(path: str | Path, what: str) -> Path:
    p = resolve(path)
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}")
    return p


def rank(key: str, seed: int) -> str:
    """Stable pseudo-random order key, independent of file order and Python's hash seed."""
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


# ---------------------------------------------------------------- GSM8K
def gsm8k(path: str | Path) -> list[dict]:
    p = _existing(path, "GSM8K")
    rows = []
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}:{i}: malformed JSON line ({e.msg})") from None
            if not isinstance(row, dict) or not row.get("question") or "####" not in str(row.get("answer", "")):
                raise ConfigError(f"{p}:{i}: a GSM8K row needs 'question' and an 'answer' ending in '#### N'")
            rows.append({"question": row["question"], "answer": row["answer"]})
    if not rows:
        raise ConfigError(f"{p}: no GSM8K rows")
    return rows


def gsm8k_hub(name: str, split: str) -> list[dict]:
    """Optional: the same set from the Hugging Face hub (needs network; never used by default)."""
    from datasets import load_dataset

    ds = load_dataset(name, "main", split=split)
    return [{"question": r["question"], "answer": r["answer"]} for r in ds]


def load_gsm8k(cfg, split: str) -> list[dict]:
    """cfg has `source` (local|hub), `<split>_path` and `hub_name`."""
    if cfg.get("source", "local") == "hub":
        return gsm8k_hub(cfg.hub_name, split)
    return gsm8k(cfg[f"{split}_path"])


def math_eval_split(rows: list[dict], n_public: int, n_private: int, seed: int):
    if n_public + n_private > len(rows):
        raise ConfigError(f"math eval asks {n_public}+{n_private} items but the test set has {len(rows)}")
    ordered = sorted(rows, key=lambda r: rank(r["question"], seed))
    return ordered[:n_public], ordered[n_public:n_public + n_private]


# ---------------------------------------------------------------- AILuminate
def ailuminate(path: str | Path) -> list[dict]:
    """Any AILuminate prompt-set CSV of the official schema, any locale."""
    p = _existing(path, "AILuminate prompt set")
    with open(p, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in AILUMINATE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{p}: not an AILuminate prompt set, missing columns {missing}")
        rows = []
        for row in reader:
            line = reader.line_num
            if None in row or any(row[c] is None for c in AILUMINATE_COLUMNS):
                raise ConfigError(f"{p}:{line}: malformed CSV row (wrong number of fields)")
            if not row["prompt_text"].strip() or not row["hazard"].strip() or not row["release_prompt_id"].strip():
                raise ConfigError(f"{p}:{line}: malformed CSV row (empty prompt_text, hazard or id)")
            rows.append({c: row[c] for c in AILUMINATE_COLUMNS})
    if not rows:
        raise ConfigError(f"{p}: no prompts")
    return rows


def stratified_split(rows: list[dict], key: str, id_key: str, n_public: int, n_private: int, seed: int):
    """Public and private sets, each stratified by `key` (largest-remainder allocation),
    disjoint, deterministic given the seed, independent of row order."""
    if n_public + n_private > len(rows):
        raise ConfigError(f"split asks {n_public}+{n_private} rows but only {len(rows)} exist")
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    for g in groups.values():
        g.sort(key=lambda r: rank(r[id_key], seed))
    pub_n = _allocate({k: len(v) for k, v in groups.items()}, n_public)
    rest = {k: len(v) - pub_n[k] for k, v in groups.items()}
    priv_n = _allocate(rest, n_private)
    public, private = [], []
    for k in sorted(groups):
        public += groups[k][: pub_n[k]]
        private += groups[k][pub_n[k]: pub_n[k] + priv_n[k]]
    return public, private


def _allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    total = sum(sizes.values())
    quota = {k: n * s / total if total else 0 for k, s in sizes.items()}
    out = {k: min(int(q), sizes[k]) for k, q in quota.items()}
    # hand out the remainder by largest fractional part, then by name (deterministic)
    order = sorted(sizes, key=lambda k: (-(quota[k] - int(quota[k])), k))
    while sum(out.values()) < n:
        progressed = False
        for k in order:
            if sum(out.values()) >= n:
                break
            if out[k] < sizes[k]:
                out[k] += 1
                progressed = True
        if not progressed:
            break
    return out


def safety_eval_split(rows: list[dict], n_public: int, n_private: int, seed: int):
    return stratified_split(rows, "hazard", "release_prompt_id", n_public, n_private, seed)


def safety_eval_ids(path: str | Path, n_public: int, n_private: int, seed: int) -> set[str]:
    public, private = safety_eval_split(ailuminate(path), n_public, n_private, seed)
    return {r["prompt_text"] for r in public + private}


# ---------------------------------------------------------------- XSTest
def xstest(path: str | Path) -> list[dict]:
    p = _existing(path, "XSTest")
    with open(p, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        need = ("id", "prompt", "type", "label")
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{p}: not an XSTest file, missing columns {missing}")
        rows = []
        for row in reader:
            if None in row or any(row[c] is None or not row[c].strip() for c in need):
                raise ConfigError(f"{p}:{reader.line_num}: malformed CSV row")
            rows.append({c: row[c] for c in need})
    return rows


def xstest_safe_subset(path: str | Path, n: int, seed: int) -> list[dict]:
    safe = [r for r in xstest(path) if r["label"] == "safe"]
    subset, _ = stratified_split(safe, "type", "id", min(n, len(safe)), 0, seed)
    return subset


def prompt_texts(rows: Iterable[dict], field: str = "prompt_text") -> list[str]:
    return [r[field] for r in rows]
