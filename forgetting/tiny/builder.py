"""Builds one preset directory from a recipe: tokenizer → model → (pretrain) → alignment → measure."""
from __future__ import annotations

import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch

from . import corpus, refusals
from .tok import encode_chat, train_tokenizer


def _features(tok, rows, max_length: int, prompt_w: float) -> list[dict]:
    feats = []
    for r in rows:
        ids, mask = encode_chat(tok, r, max_length)
        feats.append({"input_ids": ids, "weights": [1.0 if m else prompt_w for m in mask]})
    return feats


UNALIGNED = "unaligned"  # subdirectory with the pretrained, not yet aligned checkpoint


def say(msg: str) -> None:
    print(f"[forgetting.tiny] {msg}", file=sys.stderr, flush=True)


def build_into(recipe: dict, out: Path) -> dict:
    """Writes the preset into `out` (an empty directory); → the build report."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from . import train

    t0, c0 = time.time(), time.process_time()
    seed = int(recipe.get("seed", 0))
    times, report = {}, {"name": recipe.get("name"), "recipe": recipe}
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(int(recipe.get("threads", 2)))
    try:
        say(f"building preset {recipe.get('name')!r} into {out.parent} (once: later runs reuse it): data, "
            "tokenizer, pretraining and alignment (a bar each, with the time left), measurement")
        rows, ben_eval, held = corpus.alignment(recipe)
        tcfg, mcfg = recipe.get("tokenizer", {}), recipe.get("model", {})
        pre, ali = recipe.get("pretrain") or {}, recipe.get("align", {})
        gsm_text = corpus.gsm8k_text(recipe["data"]["gsm8k_path"])
        texts = (gsm_text if tcfg.get("gsm8k_text", True) else []) + refusals.all_responses()
        texts += [(r.get("system", "") + "\n" + r["prompt"] + "\n" + r["answer"]).strip() for r in rows]
        times["data"] = round(time.time() - t0, 1)
        say(f"data: {len(rows):,} alignment rows in {times['data']} s; training the tokenizer")

        t = time.time()
        max_pos = int(mcfg.get("max_position_embeddings", 1024))
        pre_texts = corpus.pretraining(recipe) if (pre.get("steps", 0) or pre.get("epochs", 0)) else []
        tok = train_tokenizer(texts + pre_texts[:2000], int(tcfg.get("vocab_size", 4096)), max_pos,
                              bool(tcfg.get("split_digits", False)))
        times["tokenizer"] = round(time.time() - t, 1)
        t = time.time()

        torch.manual_seed(seed)
        cfg = LlamaConfig(**{k: v for k, v in mcfg.items()}, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        model = LlamaForCausalLM(cfg)
        report["params"] = sum(p.numel() for p in model.parameters())
        report["vocab_size"] = len(tok)
        say(f"tokenizer: {len(tok):,} tokens in {times['tokenizer']} s; model: {report['params']:,} parameters")

        work = str(out / ".trainer")
        gen = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id, do_sample=False)
        if pre_texts:  # the unaligned model: kept as <preset>/unaligned (SafeLoRA, MagMax need it)
            feats = train.lm_features(tok, pre_texts, int(pre.get("max_length", 256)))
            report["pretrain"] = train.run(model, feats, tok.pad_token_id, pre, seed, work, "pretrain")
            report["pretrain"]["tokens_per_epoch"] = sum(len(f["input_ids"]) for f in feats)
            model.generation_config = gen
            model.save_pretrained(out / UNALIGNED, safe_serialization=True)
            tok.save_pretrained(out / UNALIGNED)
        feats = _features(tok, rows, int(ali.get("max_length", 256)), float(ali.get("prompt_loss_weight", 0.0)))
        if ali.get("replay"):  # pretraining text replayed during alignment, so its skills survive it
            replay = random.Random(f"{seed}:replay").sample(pre_texts, min(int(ali["replay"]), len(pre_texts)))
            feats += train.lm_features(tok, replay, int(ali.get("max_length", 256)))
            report["replayed_texts"] = len(replay)
        report["align"] = train.run(model, feats, tok.pad_token_id, ali, seed, work, "align")
        report["align"]["tokens_per_epoch"] = sum(len(f["input_ids"]) for f in feats)
        times["train"] = round(time.time() - t, 1)
        shutil.rmtree(work, ignore_errors=True)

        model.generation_config = gen
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        used = sorted({r["prompt"] for r in rows if r["kind"] == "refuse"})
        (out / "alignment_prompts.json").write_text(json.dumps(used, indent=0, ensure_ascii=False))
        (out / "refusals.json").write_text(json.dumps(
            {"responses": refusals.all_responses(), "openings": refusals.openings(),
             "xstest_prefixes": list(refusals.XSTEST_PREFIXES)}, indent=1))
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["kind"]] = counts.get(r["kind"], 0) + 1
        report["rows"] = counts

        if recipe.get("measure", True):
            from .measure import quality

            say("measuring refusals, over-refusal and benign answers")
            report["quality"] = quality(model, tok, held, ben_eval, recipe.get("eval", {}))
            times["measure"] = report["quality"]["seconds"]
    finally:
        torch.set_num_threads(prev_threads)
    times["total"] = round(time.time() - t0, 1)
    times["cpu_total"] = round(time.process_time() - c0, 1)  # CPU seconds, all threads (machine may be shared)
    report["seconds"] = times
    report["threads"] = int(recipe.get("threads", 2))
    report["model_bytes"] = (out / "model.safetensors").stat().st_size
    (out / "build_report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(f"[forgetting.tiny] built {report['name']}: {report['params']:,} params in {times['total']} s; "
          f"{summary(report)}", file=sys.stderr)
    return report


def summary(report: dict) -> str:
    q = report.get("quality")
    if not q:
        return "quality not measured"
    return (f"refusal on held-out harmful {q['harmful_refusal_rate']:.0%}, XSTest-safe refusal "
            f"{q['xstest_safe_refusal_rate']:.0%}, benign answered {q['benign_answered_rate']:.0%}, "
            f"benign accuracy {q['benign_accuracy']:.0%}")
