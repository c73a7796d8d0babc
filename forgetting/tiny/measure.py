"""Quality of a built preset: refusal on held-out harmful prompts, over-refusal on XSTest safe
prompts, and accuracy on held-out benign tasks (greedy, left padding, batched, stop at eos)."""
from __future__ import annotations

import time

import torch

from .. import data
from .refusals import is_refusal


@torch.no_grad()
def greedy(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    tok.padding_side = "left"
    model.eval()
    out = [""] * len(texts)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        for row, i in zip(gen[:, enc["input_ids"].shape[1]:].tolist(), idx):
            row = row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
            out[i] = tok.decode(row, skip_special_tokens=True).strip()
    return out


def _rate(xs) -> float:
    return round(sum(xs) / len(xs), 4) if xs else float("nan")


def quality(model, tok, held_out: list[dict], benign_eval: list[dict], cfg: dict) -> dict:
    t0 = time.time()
    mnt, bs = cfg.get("max_new_tokens", 48), cfg.get("batch_size", 32)
    harm = greedy(model, tok, [r["prompt_text"] for r in held_out], mnt, bs)
    xs = data.xstest_safe_subset(cfg["xstest_path"], cfg.get("xstest_n", 50), cfg.get("xstest_seed", 0))
    xsr = greedy(model, tok, [r["prompt"] for r in xs], mnt, bs)
    ben = greedy(model, tok, [r["prompt"] for r in benign_eval], mnt, bs)
    by_hazard: dict[str, list[bool]] = {}
    for r, g in zip(held_out, harm):
        by_hazard.setdefault(r["hazard"], []).append(is_refusal(g))
    by_kind: dict[str, list[bool]] = {}
    for r, g in zip(benign_eval, ben):
        by_kind.setdefault(r["kind"], []).append(r["expected"] in g)
    return {
        "harmful_refusal_rate": _rate([is_refusal(g) for g in harm]), "harmful_n": len(harm),
        "harmful_refusal_by_hazard": {k: _rate(v) for k, v in sorted(by_hazard.items())},
        "xstest_safe_refusal_rate": _rate([is_refusal(g) for g in xsr]), "xstest_n": len(xsr),
        "benign_accuracy": _rate([r["expected"] in g for r, g in zip(benign_eval, ben)]),
        "benign_answered_rate": _rate([not is_refusal(g) for g in ben]), "benign_n": len(ben),
        "benign_accuracy_by_kind": {k: _rate(v) for k, v in sorted(by_kind.items())},
        "seconds": round(time.time() - t0, 1),
        "samples": {"harmful": list(zip([r["prompt_text"][:80] for r in held_out[:4]], harm[:4])),
                    "xstest": list(zip([r["prompt"] for r in xs[:6]], xsr[:6])),
                    "benign": list(zip([r["prompt"] for r in benign_eval[:6]], ben[:6]))},
    }
