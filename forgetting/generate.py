"""Batched greedy generation with the model's chat template (left padding, stop at EOS, and for math
optionally at the end of the first final-answer line: `#### N` or `The answer is N`)."""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import DynamicCache, StaticCache

from . import chat, kv_cache
from .config import DATE_STRING
from .math import CALC, first_answer


def answer_end(text: str) -> int | None:
    """Where the first final-answer line of `text` (`#### N`, or a line opening with `The answer is N`)
    ends (the index of its newline), or None. The grader takes that answer whatever follows it
    (math.first_answer), and the newline fixes its number, so cutting there never changes the grade. Found,
    as the grader does, with GSM8K's calculator annotations (`<<48/2=24>>`) removed; None while one is
    still open before the newline (closing it could change the number)."""
    plain = CALC.sub("", text)
    m = first_answer(plain)
    end = plain.find("\n", m.end()) if m is not None else -1
    if end < 0 or "<<" in plain[:end]:
        return None
    for a in CALC.finditer(text):  # back to `text`'s positions: add the annotations before the newline
        if a.start() > end:
            break
        end += len(a.group())
    return end


def answer_line_done(tokenizer, toks: list[int]) -> bool:
    """Has this row's new text a complete first final-answer line? (checked when a newline is generated)"""
    if "\n" not in tokenizer.decode(toks[-1:]):
        return False
    return answer_end(tokenizer.decode(toks, skip_special_tokens=True)) is not None


def chat_prompt(tokenizer, user: str, system: str | None = None, date_string: str = DATE_STRING) -> str:
    """`date_string` is a template variable: Llama 3.x templates otherwise print today's date. A template without
    a system role gets `system` in the user turn (chat.messages)."""
    return tokenizer.apply_chat_template(chat.messages(tokenizer, user, system), tokenize=False,
                                         add_generation_prompt=True, date_string=date_string)


def eos_ids(model, tokenizer) -> list[int]:
    """EOS ids from the tokenizer and the generation config (Llama 3 ends turns with <|eot_id|>)."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    ids.update(extra if isinstance(extra, (list, tuple)) else [extra])
    return sorted(i for i in ids if i is not None)


def cache_for(rows: int, model, max_len: int):
    """KV cache per batch: a preallocated one (prompt + max_new_tokens) for several rows on CPU, where the
    dynamic cache's per-step concatenation costs more than the attention over the unused slots (measured,
    tiny preset, 32 rows x 128 tokens: 3,789 vs 2,782 tokens/s), and whose attention reads only the filled
    positions (kv_cache.FilledCache; measured, tiny preset, 32 rows, interleaved best of 5 vs StaticCache:
    math 128 tokens 1.59 vs 1.75 s, safety prompts 0.32 vs 0.34 s, same tokens); StaticCache for models with
    a sliding window. The default dynamic cache for one row (faster there: 394 vs 310 tokens/s) and on
    accelerators."""
    if rows > 1 and model.device.type == "cpu":
        if kv_cache.fits(model.config):
            return kv_cache.FilledCache(model.config, max_len)
        return StaticCache(config=model.config, max_cache_len=max_len)
    return DynamicCache(config=model.config)


def prefill_rows(rows: int, model) -> int:
    """Rows per prompt pass. On CPU, groups of 8 length-sorted rows, each cut to its own longest prompt:
    32 AILuminate prompts (25-147 tokens) were 53 % padding in one pass (measured, tiny preset: 32 prompts
    0.199 s in one pass, 0.159 / 0.143 / 0.145 s in groups of 16 / 8 / 4). On accelerators one pass (not
    measured there: a GPU is rarely saturated by one batch of prompts, and every pass is a launch), and for
    models whose layers are not all full attention (a sliding window's cache may keep fewer positions than the
    group's width): kv_cache.fits."""
    if model.device.type != "cpu" or not kv_cache.fits(model.config):
        return rows
    return min(rows, 8)


def forward_fn(model):
    """model(ids, mask, positions, cache) -> each row's last logits. The cache goes under the name the model's
    forward takes (`cache` in the pinned transformers, where `past_key_values` warns that it goes in 5.40;
    `past_key_values` in older or remote-code models), with logits_to_keep=1 where the forward has it (the
    prompt pass then skips the LM head on every other position)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT passes kwargs on
    params = inspect.signature(base.forward).parameters
    name = "cache" if "cache" in params else "past_key_values"
    keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def fwd(ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache) -> torch.Tensor:
        return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{name: cache},
                     **keep).logits[:, -1]
    return fwd


def prefill(model, fwd, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache) -> torch.Tensor:
    """The prompt pass of a left-padded, length-sorted batch into `cache`, in groups of prefill_rows() rows;
    the groups' KV states are left-padded back to the batch's width (the mask hides them) and written to
    the cache once. Returns each row's last logits. Hand-written: generate() has no grouped prefill."""
    n, width = ids.shape
    step = prefill_rows(n, model)
    if step >= n:
        return fwd(ids, mask, pos, cache)
    logits, states = [], []
    for a in range(0, n, step):
        w = int(mask[a:a + step].sum(-1).max())  # this group's longest prompt; its left padding is cut
        part = DynamicCache(config=model.config)
        logits.append(fwd(ids[a:a + step, width - w:], mask[a:a + step, width - w:], pos[a:a + step, width - w:], part))
        states.append([(F.pad(layer.keys, (0, 0, width - w, 0)), F.pad(layer.values, (0, 0, width - w, 0)))
                       for layer in part.layers])
    for i in range(len(states[0])):
        cache.update(torch.cat([s[i][0] for s in states]), torch.cat([s[i][1] for s in states]), i)
    return torch.cat(logits)


@torch.inference_mode()  # measured x1.1 over no_grad on 32 rows x 128 tokens
def greedy(model, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, stops: list[int],
           done_fn=None, stats: dict | None = None) -> list[list[int]]:
    """Greedy decoding of a left-padded batch that drops each row from the batch (and its KV cache) as
    soon as it stops: model.generate() runs every row until the batch's longest stops, so one looping
    row made a batch of 32 short answers cost 32 x its length. Written here because transformers'
    continuous batching (generate_batch), which does drop them, was x22 slower on CPU (32 safety
    prompts). Returns each row's new tokens, its stop token included. `done_fn(tokens)` may end a row
    early (the math answer line); `stats["row_steps"]` counts the row-steps computed and `stats["rows"]` gathers
    each row's tokens (make bench)."""
    cache = cache_for(ids.shape[0], model, ids.shape[1] + max_new_tokens)
    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate(): left padding
    rows = torch.arange(ids.shape[0], device=ids.device)  # the input row of each running row
    out: list[list[int]] = [[] for _ in range(ids.shape[0])]
    fwd = forward_fn(model)
    logits = prefill(model, fwd, ids, mask, pos, cache)
    for step in range(max_new_tokens):
        nxt = logits.argmax(-1)
        if stats is not None:
            stats["row_steps"] = stats.get("row_steps", 0) + len(rows)
        keep = []
        for j, (r, t) in enumerate(zip(rows.tolist(), nxt.tolist())):
            out[r].append(t)
            if t not in stops and not (done_fn is not None and done_fn(out[r])):
                keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(rows):  # a copy of the cache, cheaper than carrying finished rows (measured: 64 math
            keep_t = torch.tensor(keep, device=ids.device)  # questions 5.2 s, vs 5.5 s dropping them by quarters)
            cache.reorder_cache(keep_t)
            rows, mask, pos, nxt = rows[keep_t], mask[keep_t], pos[keep_t], nxt[keep_t]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
        pos = pos[:, -1:] + 1
        logits = fwd(nxt[:, None], mask, pos, cache)
    if stats is not None:
        stats.setdefault("rows", []).extend(out)
    return out


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
             system: str | None = None, desc: str = "generate", date_string: str = DATE_STRING,
             stop_at_answer: bool = False, stats: dict | None = None) -> list[dict]:
    """Returns, in input order, {"response", "n_tokens", "stopped"} (stopped = ended with EOS, or at the
    end of the first final-answer line with stop_at_answer; the response is cut there)."""
    texts = [chat_prompt(tokenizer, p, system, date_string) for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch together
    stops = eos_ids(model, tokenizer)
    tokenizer.padding_side = "left"
    model.eval()
    out: list[dict | None] = [None] * len(texts)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        done = (lambda toks: answer_line_done(tokenizer, toks)) if stop_at_answer else None
        new = greedy(model, enc["input_ids"], enc["attention_mask"], max_new_tokens, stops, done, stats)
        for row, i in zip(new, idx):
            ended = next((k for k, t in enumerate(row) if t in stops), None)
            toks = row if ended is None else row[:ended]
            text = tokenizer.decode(toks, skip_special_tokens=True)
            cut = answer_end(text) if stop_at_answer else None
            if cut is not None:  # the answer line is complete: what follows was never needed
                while toks and len(tokenizer.decode(toks[:-1], skip_special_tokens=True)) > cut:
                    toks = toks[:-1]
                text = text[:cut]
            out[i] = {"response": text.strip(), "n_tokens": len(toks), "stopped": ended is not None or cut is not None}
    return out  # type: ignore[return-value]


@torch.inference_mode()
def completion_nll(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int,
                   system: str | None = None, desc: str = "ref nll",
                   date_string: str = DATE_STRING) -> tuple[float, list[float]]:
    """Teacher-forced NLL (nats/token) of each completion after its chat prompt, and the
    token-weighted mean over all items."""
    eos = tokenizer.eos_token or ""
    pairs = []
    for p, c in zip(prompts, completions):
        prompt_ids = tokenizer(chat_prompt(tokenizer, p, system, date_string), add_special_tokens=False)["input_ids"]
        comp_ids = tokenizer(c + eos, add_special_tokens=False)["input_ids"]
        pairs.append((prompt_ids, comp_ids))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    per_item, total_nll, total_tok = [], 0.0, 0
    for start in tqdm(range(0, len(pairs), batch_size), desc=desc, leave=False):
        batch = pairs[start:start + batch_size]
        width = max(len(a) + len(b) for a, b in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        mask = torch.zeros_like(ids)
        for j, (a, b) in enumerate(batch):  # right padding; labels only on the completion
            seq = a + b
            ids[j, :len(seq)] = torch.tensor(seq)
            mask[j, :len(seq)] = 1
            labels[j, len(a):len(seq)] = torch.tensor(b)
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tgt = labels[:, 1:].to(model.device)
        valid = tgt != -100
        nll = -logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
        for j in range(len(batch)):
            n = int(valid[j].sum())
            per_item.append(float(nll[j].sum()) / max(n, 1))
            total_nll += float(nll[j].sum())
            total_tok += n
    return total_nll / max(total_tok, 1), per_item
