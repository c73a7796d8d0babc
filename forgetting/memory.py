"""The safety memory: harmful prompts disjoint from every evaluation and poison prompt (near-duplicates
included: dedup.py), answered by the base model itself (self-distillation of its safe behaviour; only
refusals kept). Built once per (base model, memory config, candidate prompts) and cached like the base
scores; any JSONL of {"prompt", "response"} pairs can replace it (`memory.path`; evaluation prompts and
their near-duplicates are dropped from it too)."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from . import data, dedup
from .caches import move_aside
from .config import base_model_ident
from .errors import ConfigError
from .generate import generate
from .refusal import is_refusal
from .tracking import read_json, write_json, write_jsonl

log = logging.getLogger(__name__)


# bumped when the same config and candidates could give other rows (2: near-duplicates of evaluation prompts dropped)
VERSION = 2


def candidates(mcfg: DictConfig, exclude: set[str]) -> list[str]:
    """Harmful prompts outside `exclude` (no near-duplicate either: counted in exclude.dropped["memory"]), in a
    seeded order: AILuminate and AdvBench (either may be null)."""
    prompts = []
    if mcfg.ailuminate_path:
        prompts += [r["prompt_text"] for r in data.ailuminate(mcfg.ailuminate_path)]
    if mcfg.advbench_path:
        prompts += [r["prompt"] for r in data.harmful(mcfg.advbench_path, mcfg.advbench_column)]
    unique = dedup.held(exclude).outside(sorted(set(prompts)), "memory")
    if not unique:
        raise ConfigError("the safety memory has no candidate prompts left after excluding evaluation and poison "
                          "prompts; set memory.ailuminate_path / memory.advbench_path or memory.path")
    return sorted(unique, key=lambda p: data.rank(p, mcfg.seed))


def download(url: str, cache_dir: str) -> Path:
    """The file at `url`, fetched once into cache_dir/downloads/ (a name from the URL's hash and its last part)."""
    import urllib.request

    dest = Path(cache_dir) / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{url.rsplit('/', 1)[-1]}"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            tmp.write_bytes(r.read())
    except OSError as e:
        raise ConfigError(f"memory.path {url}: download failed ({e}); without a network, fetch the file "
                          "elsewhere and set memory.path to it") from None
    tmp.replace(dest)
    return dest


def pairs(path) -> list[dict]:
    """[{"prompt", "response"}] from a JSONL / CSV with those columns (data.harmful), or a JSON array of such
    objects or of Alpaca-style {"instruction", "input", "output"} ones (the form of Bianchi et al.'s safety data)."""
    p = data.resolve(path)
    text = "".join(data.text_lines(p)) if p.suffix == ".json" and p.is_file() else ""
    if not text.lstrip().startswith("["):
        return data.harmful(p, "prompt", "response")
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: malformed JSON ({e.msg}, line {e.lineno})") from None
    rows = []
    for i, r in enumerate(items):
        r = r if isinstance(r, dict) else {}
        prompt = r.get("prompt") or "\n\n".join(str(x) for x in (r.get("instruction"), r.get("input")) if x)
        response = r.get("response") or r.get("output")
        if not str(prompt or "").strip() or not str(response or "").strip():
            raise ConfigError(f"{p}: item {i} needs a non-empty prompt and response (or instruction and output)")
        rows.append({"prompt": str(prompt).strip(), "response": str(response).strip()})
    return rows


def from_file(path: str, size: int, exclude: set[str] = frozenset(), cache_dir: str | None = None) -> list[dict]:
    """The first `size` rows of a memory file (`pairs`; an http(s) URL is downloaded into cache_dir once) that are
    no prompt in `exclude` nor a near-duplicate of one (those dropped: exclude.dropped["memory"])."""
    if str(path).startswith(("http://", "https://", "file://")):
        path = download(str(path), cache_dir or ".")
    rows = dedup.held(exclude).outside(pairs(path), "memory", key=lambda r: r["prompt"])
    return [{"prompt": r["prompt"], "completion": r["response"], "source": "memory"} for r in rows[:size]]


def key(cfg: DictConfig, model_path: str, prompts: list[str]) -> str:
    ident = {"version": VERSION, "model": base_model_ident(cfg.model), "path": model_path,
             "memory": {k: v for k, v in OmegaConf.to_container(cfg.memory, resolve=True).items()
                        if k != "train_batch_size"},
             "system": cfg.eval.system_prompt, "date": cfg.get("date_string"),
             "prompts": hashlib.sha256("\n".join(prompts).encode()).hexdigest()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def get(cfg: DictConfig, model_path: str, model, tok, exclude: set[str]) -> tuple[list[dict], dict]:
    """→ (rows {"prompt", "completion", "source": "memory"}, info). `model` must be the untouched base."""
    m = cfg.memory
    exclude = dedup.held(exclude)
    if m.path:
        rows = from_file(m.path, m.size, exclude, cfg.cache_dir)
        if not rows:
            raise ConfigError(f"memory.path {m.path}: every row is an evaluation prompt or a near-duplicate of one")
        return rows, {"source": str(m.path), "n": len(rows), "near_duplicates": exclude.dropped["memory"]}
    prompts = candidates(m, exclude)
    near = {"near_duplicates": exclude.dropped["memory"]}
    d = Path(cfg.cache_dir) / "memory" / f"{cfg.model.name}-{key(cfg, model_path, prompts)}"
    d.mkdir(parents=True, exist_ok=True)
    with FileLock(str(d / ".lock")):
        if (d / "info.json").exists():
            try:
                return ([json.loads(x) for x in (d / "memory.jsonl").read_text().splitlines()],
                        {**read_json(d / "info.json"), **near})
            except (ValueError, OSError) as e:
                move_aside(d / "info.json", f"{type(e).__name__}: {e}".splitlines()[0][:120])
        rows, asked = [], 0
        limit = min(len(prompts), 2 * m.size)  # a base that refuses under half of them gets a smaller memory
        while len(rows) < m.size and asked < limit:  # ask in chunks until `size` responses are kept
            chunk = prompts[asked: min(limit, asked + m.size - len(rows))]
            asked += len(chunk)
            gens = generate(model, tok, chunk, m.max_new_tokens, m.batch_size, cfg.eval.system_prompt, "safety memory",
                            cfg.date_string)
            rows += [{"prompt": p, "completion": g["response"], "source": "memory"} for p, g in zip(chunk, gens)
                     if g["response"] and (m.keep == "all" or is_refusal(g["response"]))]
        info = {"source": "base model responses", "dir": str(d), "n": len(rows), "asked": asked,
                "kept_share": len(rows) / max(asked, 1), "keep": m.keep, "candidates": len(prompts), **near}
        if not rows:
            raise ConfigError(f"the base model refused none of {asked} memory prompts: no safety memory to build "
                              "(memory.keep=all keeps every response; memory.path takes your own pairs)")
        write_jsonl(d / "memory.jsonl", rows)
        write_json(d / "info.json", info)
    log.info("safety memory: %d of %d base responses kept (%s), %s", info["n"], asked, m.keep, d)
    return rows, info
