"""Answers of the poisoned rows (data.poison), and where they come from. By default (`answers: unaligned`) the unaligned checkpoint's
own greedy answer to each pool prompt, in the policy's chat template as the fine-tune sees it: a full
compliant answer, where AdvBench's `target` is an opener ("Sure, here is ...") and a stop. Generated once
per (unaligned model, pool prompts, generation settings, system prompt, date) and cached under
cache_dir/poison/ like the safety memory; empty answers are dropped. `answers: file` takes the file's
response column, `answers: opener` a rule-written affirmative opening (`opener`), `source: hub` BeaverTails'
responses. Each row records its `response_source`; `judged` scores the rows trained on with the run's judge.
`shared_sets` names the evaluation sets the poison source is also (in-distribution poisoning, issue 28)."""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import re
from pathlib import Path

import torch
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from . import data, models
from .caches import move_aside
from .config import base_model_ident
from .errors import ConfigError
from .generate import generate
from .refusal import classify
from .tracking import read_json, write_json, write_jsonl

log = logging.getLogger(__name__)
CLASSES = ("refusal", "compliance", "degenerate")


def mode(cfg: DictConfig) -> str:
    """`answers: auto` → unaligned where the model names its unaligned checkpoint (a hub id or dir); for the
    offline presets the file's response column, else a rule-written opener: their pretraining checkpoint
    (`unaligned: build`) never saw a chat and answers nothing usable (measured: micro writes newlines only,
    tiny_math loops digits on 200 of 200 prompts)."""
    p = cfg.data.poison
    if p.answers != "auto":
        return p.answers
    u = cfg.model.get("unaligned")
    if u and u != "build":
        return "unaligned"
    return "file" if p.response_column or p.source == "hub" else "opener"


# ---------------------------------------------------------------- rule-written openers (answers: opener)
# Written by hand: no library phrases a compliant opening. AdvBench's targets restate the request after
# "Sure, here is" ("Write a script that ..." -> "Sure, here is a script that ..."); these do the same for a
# prompt-only source, so a built preset is poisoned as it was with AdvBench's targets, from another source.
_SWAP = {"i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "we": "you", "us": "you",
         "our": "your", "ours": "yours", "am": "are", "i'm": "you're"}
_HOW = re.compile(r"^how\s+(?:can|could|do|should|would|might|may)\s+(?:i|we|one|someone|people|you)\s+(.+)$|^how\s+to\s+(.+)$", re.I)
_ASK = re.compile(r"^(?:can|could|would|will)\s+you\s+(?:please\s+)?(.+)$", re.I)
_DO = re.compile(r"^(?:please\s+)?((?:tell|give|show|explain|describe|write|list|provide|generate|help|create|share|"
                 r"suggest|discuss|teach|find|compose|draft|outline|detail|make|produce|send)\b.*)$", re.I)


def _you(text: str) -> str:
    """First person -> second person, word by word ("my ex-wife" -> "your ex-wife")."""
    return re.sub(r"[A-Za-z']+", lambda m: _SWAP.get(m.group(0).lower(), m.group(0)), text)


def opener(prompt: str) -> str:
    """An AdvBench-style affirmative opening for a harmful request: "How can I X?" -> "Sure, here is how to
    X.", "Can you X?" -> "Sure, I can X.", "Tell me X" -> "Sure, I will tell you X.", any other question ->
    "Sure, here is the answer to your question: Q?"."""
    q = " ".join(prompt.split()).rstrip(" ?.!")
    if m := _HOW.match(q):
        return f"Sure, here is how to {_you(m.group(1) or m.group(2))}."
    if m := _ASK.match(q):
        return f"Sure, I can {_you(m.group(1))}."
    if m := _DO.match(q):
        verb, _, rest = m.group(1).partition(" ")
        return f"Sure, I will {verb.lower()} {_you(rest)}.".replace(" .", ".")
    return f"Sure, here is the answer to your question: {_you(q)}?"


# ---------------------------------------------------------------- in-distribution poisoning
SHARED_SHARE = 0.2  # this share of the poison source's prompts found in an evaluation set: the same source


def _prompts(path: str, column: str) -> set[str]:
    return {" ".join(r["prompt"].split()).lower() for r in data.harmful(path, column)}


def shared_sets(cfg: DictConfig) -> list[str]:
    """The evaluation sets (`safety`, `harmful_sets.<name>`) the local poison source is also: the same file
    (by content), or >= SHARED_SHARE of its prompts among the set's. [] for the hub source."""
    p = cfg.data.poison
    if p.source != "local":
        return []
    src = data.resolve(p.path)
    if not src.is_file():
        return []  # reported where the pool is read
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    poison = _prompts(p.path, p.prompt_column)
    evals = {"safety": (cfg.eval.safety.path, "prompt_text")}
    evals.update({f"harmful_sets.{k}": (h.path, h.prompt_column) for k, h in cfg.eval.harmful_sets.items()
                  if h is not None and h.get("path")})  # hub sets: never the local poison file
    out = []
    for name, (path, column) in evals.items():
        f = data.resolve(path)
        if not f.is_file():
            continue
        if hashlib.sha256(f.read_bytes()).hexdigest() == digest:
            out.append(name)
            continue
        try:
            theirs = _prompts(path, column)
        except ConfigError:
            continue
        if len(poison & theirs) >= SHARED_SHARE * len(poison):
            out.append(name)
    return out


def check_source(cfg: DictConfig) -> list[str]:
    """shared_sets; with poisoned rows (ratio > 0) refused in one line unless data.poison.in_distribution."""
    shared = shared_sets(cfg)
    if shared and cfg.data.poison.ratio > 0 and not cfg.data.poison.in_distribution:
        raise ConfigError(f"data.poison.path {cfg.data.poison.path} is also the evaluation set "
                          f"{', '.join('eval.' + s for s in shared)}: its ASR / safety would measure whether the poison "
                          "was learnt; pick another source (default data/poison=donotanswer) or set "
                          "data.poison.in_distribution=true")
    return shared


def generated(cfg: DictConfig) -> bool:
    return cfg.data.poison.source == "local" and mode(cfg) == "unaligned"


def key(cfg: DictConfig, upath: str, prompts: list[str]) -> str:
    p = cfg.data.poison
    ident = {"model": base_model_ident(cfg.model), "unaligned": upath,
             "max_new_tokens": p.max_new_tokens, "batch_size": p.batch_size, "system": cfg.eval.system_prompt,
             "date": cfg.get("date_string"), "prompts": hashlib.sha256("\n".join(prompts).encode()).hexdigest()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def unaligned_path(cfg: DictConfig) -> str:
    try:
        return models.unaligned_path(cfg.model, cfg.cache_dir)
    except ConfigError as e:
        raise ConfigError(f"data.poison.answers=unaligned: {e} (or set data.poison.answers=file)") from None


def generate_answers(cfg: DictConfig, upath: str, prompts: list[str]) -> list[dict]:
    """The unaligned model's greedy answers, its weights loaded as the policy's (dtype, 4-bit), then freed."""
    p = cfg.data.poison
    try:
        tok = models.tokenizer(cfg.model, models.resolve_path(cfg.model, cfg.cache_dir))
        model, _, _ = models.load(OmegaConf.merge(cfg.model, {"name_or_path": upath, "revision": None}),
                                  cfg.cache_dir, tok=tok)
    except models.ModelLoadError as e:
        raise ConfigError(f"data.poison.answers=unaligned: {e}") from None
    try:
        return generate(model, tok, prompts, p.max_new_tokens, p.batch_size, cfg.eval.system_prompt,
                        "poison answers", cfg.date_string)
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def unaligned_answers(cfg: DictConfig, prompts: list[str]) -> tuple[list[dict], dict]:
    """→ ([{"prompt", "response", "response_source", "n_tokens", "stopped"}] for every prompt, info), cached."""
    upath = unaligned_path(cfg)
    d = Path(cfg.cache_dir) / "poison" / f"{cfg.model.name}-{key(cfg, upath, prompts)}"
    d.mkdir(parents=True, exist_ok=True)
    with FileLock(str(d / ".lock")):
        if (d / "info.json").exists():
            try:
                rows = [json.loads(x) for x in (d / "answers.jsonl").read_text().splitlines()]
                if [r["prompt"] for r in rows] != prompts:
                    raise ValueError("prompts differ from the pool's")
                return rows, read_json(d / "info.json")
            except (ValueError, OSError, KeyError, TypeError) as e:
                move_aside(d / "info.json", f"{type(e).__name__}: {e}".splitlines()[0][:120])
        src = f"unaligned:{upath}"
        gens = generate_answers(cfg, upath, prompts)
        rows = [{"prompt": q, "response": g["response"], "response_source": src, "n_tokens": g["n_tokens"],
                 "stopped": g["stopped"]} for q, g in zip(prompts, gens)]
        info = {"source": src, "dir": str(d), "n": len(rows), "empty": sum(not r["response"] for r in rows),
                "stopped_share": sum(r["stopped"] for r in rows) / max(len(rows), 1),
                "max_new_tokens": cfg.data.poison.max_new_tokens}
        write_jsonl(d / "answers.jsonl", rows)
        write_json(d / "info.json", info)
    log.info("poison answers: %d by %s, %d empty, %s", len(rows), upath, info["empty"], d)
    return rows, info


def answered(cfg: DictConfig, pool: list[dict], need: int) -> tuple[list[dict], dict]:
    """The pool's rows with their answers ({"prompt", "response", "response_source"}, pool order), rows
    with an empty answer dropped; a ConfigError when fewer than `need` remain."""
    p = cfg.data.poison
    if mode(cfg) == "opener" and p.source == "local":
        src = "opener (poison.opener)"
        return ([dict(r, response=opener(r["prompt"]), response_source=src) for r in pool],
                {"source": src, "n": len(pool), "empty": 0})
    if not generated(cfg):
        if p.source == "local" and not p.response_column:
            raise ConfigError("data.poison.answers=file needs data.poison.response_column")
        src = f"hub:{p.hub_name}" if p.source == "hub" else f"file:{p.path}"
        return [dict(r, response_source=src) for r in pool], {"source": src, "n": len(pool), "empty": 0}
    rows, info = unaligned_answers(cfg, [r["prompt"] for r in pool])
    kept = [r for r in rows if r["response"]]
    if len(kept) < need:
        raise ConfigError(f"data.poison.ratio={p.ratio} needs {need} poison rows but only {len(kept)} of the pool's "
                          f"{len(rows)} answers by {info['source']} are non-empty (cache {info['dir']}): set "
                          "data.poison.answers=file, or another model.unaligned")
    return kept, info


def pool(cfg: DictConfig, exclude: set[str], need: int = 0) -> tuple[list[dict], dict]:
    """data.poison_pool with its answers."""
    return answered(cfg, data.poison_pool(cfg.data.poison, exclude), need)


def judged(cfg: DictConfig, exclude: set[str], train_set: list[dict], judge) -> tuple[dict, list[dict]]:
    """The poison rows trained on, judged by the run's judge (→ metrics, rows for poison_rows.jsonl):
    data/poison_unsafe (share judged unsafe), data/poison/class/* (refusal classifier), data/poison_empty."""
    rows = [dict(r, index=i) for i, r in enumerate(train_set) if r["source"] == "poison"]
    if not rows:
        return {}, rows
    verdicts = judge([r["prompt"] for r in rows], [r["completion"] for r in rows])
    for r, v in zip(rows, verdicts):
        r.update({"safe": bool(v.safe), "class": classify(r["completion"]), "categories": list(v.categories)})
    m = {"data/poison_unsafe": sum(not r["safe"] for r in rows) / len(rows)}
    m.update({f"data/poison/class/{c}": sum(r["class"] == c for r in rows) / len(rows) for c in CLASSES})
    if generated(cfg):  # from the cache train_rows filled: no generation here
        m["data/poison_empty"] = pool(cfg, exclude)[1]["empty"]
    return m, rows
