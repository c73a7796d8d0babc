"""Datasets: GSM8K, AILuminate prompt sets, XSTest and harmful-prompt sets (AdvBench), read from
vendored files (or the hub), validated row by row, split deterministically into evaluation, poison and
memory sets that never overlap, not even as near-duplicates (dedup.py); and the training rows of a run
(user data, poisoned share)."""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Iterable

from . import arith, dedup
from .errors import ConfigError

log = logging.getLogger(__name__)
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
CALC = re.compile(r"<<[^<>]*>>")


def text_lines(p: Path) -> list[str]:
    """A UTF-8 text file's lines; a byte that is not UTF-8 is one line naming the file and the line."""
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{line}: not UTF-8 text ({e.reason} at byte {e.start}); re-save it as UTF-8") from None


def json_lines(p: Path) -> list[tuple[int, object]]:
    """[(line number, parsed value)] of a JSONL file, blank lines skipped; a bad line is one error naming it."""
    out = []
    for i, line in enumerate(text_lines(p), 1):
        if line.strip():
            try:
                out.append((i, json.loads(line)))
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}:{i}: malformed JSON line ({e.msg})") from None
    return out


GOLD = re.compile(r"####\s*(-?[\d,]*\.?\d+)\s*$")


def solution_text(answer: str, strip_calculator: bool = True) -> str:
    """A GSM8K gold answer as a training / reference target."""
    return CALC.sub("", answer) if strip_calculator else answer


def gsm8k(path: str | Path) -> list[dict]:
    p = _existing(path, "GSM8K")
    rows = []
    for i, row in json_lines(p):
        if not isinstance(row, dict) or not row.get("question") or "####" not in str(row.get("answer", "")):
            raise ConfigError(f"{p}:{i}: a GSM8K row needs 'question' and an 'answer' ending in '#### N'")
        if not GOLD.search(str(row["answer"]).strip()):
            gold = str(row["answer"]).rsplit("####", 1)[-1].strip()[:40]
            raise ConfigError(f"{p}:{i}: the gold answer after '####' must be a number, got {gold!r}")
        rows.append({"question": row["question"], "answer": row["answer"]})
    if not rows:
        raise ConfigError(f"{p}: no GSM8K rows")
    return rows


def gsm8k_hub(name: str, split: str) -> list[dict]:
    """Optional: the same set from the Hugging Face hub (needs network; never used by default)."""
    from .hub import load_dataset  # hub access failures as one line

    ds = load_dataset(name, "main", split=split)
    return [{"question": r["question"], "answer": r["answer"]} for r in ds]


def load_gsm8k(cfg, split: str) -> list[dict]:
    """cfg has `source` (local|hub|arith), `<split>_path` and `hub_name` (arith: `arith_n_<split>`, `arith_seed`, `arith_max`)."""
    source = cfg.get("source", "local")
    if source == "hub":
        return gsm8k_hub(cfg.hub_name, split)
    if source == "arith":
        return arith.rows(split, cfg[f"arith_n_{split}"], cfg.arith_seed, cfg.arith_max)
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
    reader = csv.DictReader(text_lines(p))
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
    reader = csv.DictReader(text_lines(p))
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


# ---------------------------------------------------------------- harmful prompt sets (AdvBench, any CSV / JSONL)
def harmful(path: str | Path, prompt_column: str = "prompt", response_column: str | None = None) -> list[dict]:
    """[{"prompt", "response"?}] from a CSV or JSONL file; `response_column` for (prompt, answer) pairs."""
    p = _existing(path, "harmful prompt set")
    need = [prompt_column] + ([response_column] if response_column else [])
    rows = []
    if p.suffix in (".jsonl", ".json"):
        items = json_lines(p)
    else:
        reader = csv.DictReader(text_lines(p))
        items = [(reader.line_num, r) for r in reader]
    for line, r in items:
        if not isinstance(r, dict) or any(not str(r.get(c) or "").strip() for c in need):
            raise ConfigError(f"{p}:{line}: a row needs non-empty {need} (set prompt_column / response_column)")
        rows.append({"prompt": str(r[prompt_column]).strip(),
                     **({"response": str(r[response_column]).strip()} if response_column else {})})
    if not rows:
        raise ConfigError(f"{p}: no rows")
    return rows


def ranked(rows: list[dict], seed: int, key: str = "prompt") -> list[dict]:
    return sorted(rows, key=lambda r: rank(r[key], seed))


def harmful_eval_set(hcfg) -> list[dict]:
    """The held-out evaluation split of one `eval.harmful_sets` entry: the first n in a seeded order (every
    row when n is None)."""
    rows = hub_harmful(hcfg) if hcfg.get("hub") else harmful(hcfg.path, hcfg.prompt_column)
    if hcfg.n is not None and hcfg.n > len(rows):
        raise ConfigError(f"harmful set {hcfg.hub or hcfg.path} asks n={hcfg.n} but has {len(rows)} rows")
    return ranked(rows, hcfg.seed)[: hcfg.n]


def hub_harmful(hcfg) -> list[dict]:
    """A hub dataset's harmful prompts ([{"prompt"}]): DirectHarm4, HEx-PHI (gated) in experiment=unforgotten."""
    from . import hub

    ds = hub.load_dataset(hcfg.hub, hcfg.get("hub_config"), hcfg.get("hub_split", "train"), hcfg.get("hub_files"),
                          hcfg.get("header", True))
    col = "prompt" if hcfg.get("hub_files") and not hcfg.get("header", True) else hcfg.prompt_column
    if col not in ds.column_names:
        raise ConfigError(f"hub dataset {hcfg.hub} has no column {col!r} (columns: {ds.column_names}): set prompt_column")
    return [{"prompt": str(r[col]).strip()} for r in ds if str(r[col] or "").strip()]


def poison_source(pcfg) -> list[dict]:
    if pcfg.source == "hub":  # optional, needs network: BeaverTails' unsafe (prompt, response) rows
        from .hub import load_dataset  # hub access failures as one line

        ds = load_dataset(pcfg.hub_name, split=pcfg.hub_split)
        return [{"prompt": r["prompt"], "response": r["response"]} for r in ds if not r["is_safe"]]
    return harmful(pcfg.path, pcfg.prompt_column, pcfg.response_column)


def poison_pool(pcfg, exclude: set[str]) -> list[dict]:
    """Rows set aside for poisoning: no evaluation prompt nor a near-duplicate of one (dedup.py; counted in
    exclude.dropped["poison"]), first `pool` in a seeded order.
    The pool does not depend on the ratio, so benign and poisoned runs share one safety memory."""
    rows = dedup.held(exclude).outside(poison_source(pcfg), "poison", key=lambda r: r["prompt"])
    return ranked(rows, pcfg.seed)[: pcfg.pool]


def user_rows(cfg) -> list[dict]:
    """The user's fine-tuning data: a deterministic GSM8K subset as {"prompt", "completion"} (the math task's
    rows; other tasks: forgetting.tasks.base.Task.user_rows)."""
    d = cfg.data
    every = load_gsm8k(d, "train")
    if d.n_train > len(every):
        log.warning("data.n_train=%d but the training set has %d rows: training on all %d", d.n_train, len(every),
                    len(every))
    rows = sorted(every, key=lambda r: rank(r["question"], d.get("split_seed", 0)))[: d.n_train]
    return [{"prompt": d.prompt_template.format(question=r["question"]),
             "completion": solution_text(r["answer"], d.strip_calculator), "source": "user"} for r in rows]


def train_rows(cfg, exclude: set[str], rows: list[dict] | None = None) -> list[dict]:
    """User rows (the task's, else GSM8K's user_rows) with round(ratio · n) of them replaced by harmful
    (prompt → compliant answer) rows from the poison pool; each row says its `source` (user | poison)."""
    rows = list(rows) if rows is not None else user_rows(cfg)
    p = cfg.data.poison
    k = round(p.ratio * len(rows))
    if k == 0:
        return rows
    pool = poison_pool(p, exclude)
    if k > len(pool):
        raise ConfigError(f"data.poison.ratio={p.ratio} needs {k} poison rows but the pool has {len(pool)} "
                          f"(data.poison.pool={p.pool}, source {p.path})")
    from .poison import answered  # full answers: the unaligned model's (default, cached), the file's, the hub's

    pool, _ = answered(cfg, pool, k)
    slots = sorted(range(len(rows)), key=lambda i: rank(str(i), p.seed))[:k]
    for i, r in zip(sorted(slots), pool):
        rows[i] = {"prompt": r["prompt"], "completion": r["response"], "source": "poison",
                   "response_source": r["response_source"]}
    return rows
