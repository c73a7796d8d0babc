"""Math generation stops at the end of the first final-answer line (`#### N`, `The answer is N`), and the
grade never changes."""
import random
import warnings

import pytest
import torch

from forgetting.generate import answer_end, answer_line_done
from forgetting.math import extract_answer

TEXTS = [
    "She has 3 + 4 = 7 apples.\n#### 7\nQuestion: Tom has 9 pears...\n#### 9",
    "#### 1,234\nmore text 5",
    "The answer is 5.\n#### 6\nand then 7",
    "Work: 2 * 3 = 6\n####   -12\n\n#### 4",
    "#### 12.50\nnext",
    "The answer is 14.\n\n number is 1000",
    "**The final answer is: $1,200**\nQuestion: 3 + 4?\n#### 7",
    "so the answer is 5 per box\nthen 4 boxes\n#### 20\nQuestion: 9",
    "#### 7 apples\nThe answer is 8.\n",
    "She sold 48/2 = <<48/2=24>>24 clips.\n#### <<24+48=72>>72\nQuestion: <<1+1=2>>",
]


@pytest.mark.parametrize("text", TEXTS)
def test_cutting_at_the_answer_line_keeps_the_grade(text):
    cut = answer_end(text)
    assert cut is not None and text[cut] == "\n"
    assert extract_answer(text[:cut]) == extract_answer(text)


@pytest.mark.parametrize("text", ["#### 12", "#### 1,2", "no answer yet\n", "The answer is 5.", "####\n",
                                  "The answer is\n", "so the answer is 5 per box\n", "#### 5<<x\n", "<<\n#### 6\n"])
def test_no_cut_before_the_answer_line_is_complete(text):
    assert answer_end(text) is None


FRAGMENTS = ["The answer is 5.", "#### 7", "so the answer is 3 per box", "\\boxed{9}", "Answer: 4", "<<2*3=6>>6",
             "\n", "\n", " ", "12", ",345", ".5", "**", "The final answer is: $", "Question: 8 apples?", "####",
             "A: 2", "the answer is", "1", "0", "<<", ">>", "<<4+4=8>>"]


def test_a_stop_found_early_holds_for_every_continuation():
    """What generation relies on: once a prefix of a text has an answer line end, the whole text has the
    same one, and cutting there keeps the grade (random texts from answer-like fragments, every prefix)."""
    rng, stops = random.Random(0), 0
    for _ in range(1500):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 12)))
        cut = next((c for k in range(1, len(text) + 1) if (c := answer_end(text[:k])) is not None), None)
        if cut is not None:
            stops += 1
            assert answer_end(text) == cut, text
            assert extract_answer(text[:cut]) == extract_answer(text), text
    assert stops > 100  # the fragments do make answer lines


class CharTok:
    """One character per token id (enough to drive the stopping criterion)."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(int(i)) for i in (ids.tolist() if hasattr(ids, "tolist") else ids))


def test_answer_line_ends_a_row_once_its_line_is_complete():
    tok = CharTok()
    for row, end in [("x = 5\n#### 5\nQ", len("x = 5\n#### 5\n")), ("still thinking\n", None), ("#### 4", None)]:
        ids = [ord(c) for c in row]
        first = next((k for k in range(1, len(ids) + 1) if answer_line_done(tok, ids[:k])), None)
        assert first == end, row


def test_batched_generation_with_the_static_cache_matches_one_at_a_time(micro_path):
    """Several rows on CPU use a preallocated (static) KV cache; one row the dynamic one. Both give the
    same greedy text, with left padding and rows of different lengths."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

    from forgetting.generate import cache_for, generate
    from forgetting.kv_cache import FilledCache

    model = AutoModelForCausalLM.from_pretrained(micro_path)
    tok = AutoTokenizer.from_pretrained(micro_path)
    assert isinstance(cache_for(4, model, 64), FilledCache) and isinstance(cache_for(1, model, 64), DynamicCache)
    prompts = ["How many apples?", "Tell me a story about a very long day at the market with friends.", "Hi", "2 + 2"]
    batched = generate(model, tok, prompts, 24, batch_size=4)
    single = generate(model, tok, prompts, 24, batch_size=1)
    assert [g["response"] for g in batched] == [g["response"] for g in single]
    assert sum(g["n_tokens"] for g in batched) > 0


def test_filled_cache_attends_to_the_written_positions_only(random_micro, monkeypatch):
    """A batch's preallocated cache hands attention the positions written so far, not its whole buffer
    (StaticCache's): the keys grow by one per step, and the tokens equal StaticCache's and model.generate()'s."""
    from transformers import StaticCache

    from forgetting import generate as gen
    from forgetting import kv_cache

    model, tok = random_micro()
    enc = tok([gen.chat_prompt(tok, p) for p in ["Hi", "Tell me a long story about the market.", "2 + 2"]],
              return_tensors="pt", padding=True, add_special_tokens=False)
    width, pad = enc["input_ids"].shape[1], tok.pad_token_id or 0
    ref = model.generate(**enc, max_new_tokens=10, do_sample=False, eos_token_id=[], pad_token_id=pad)
    seen = []
    update = kv_cache.FilledLayer.update

    def spy(self, k, v, *a, **kw):
        keys, values = update(self, k, v)
        seen.append(keys.shape[-2])
        return keys, values

    monkeypatch.setattr(kv_cache.FilledLayer, "update", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the cache goes in under `cache`, not `past_key_values`
        out = gen.greedy(model, enc["input_ids"], enc["attention_mask"], 10, [])
    layers = model.config.num_hidden_layers
    assert seen[::layers] == [width + i for i in range(10)]  # the prompt, then one more per step (buffer: width + 10)
    assert out == ref[:, width:].tolist()
    monkeypatch.setattr(kv_cache, "fits", lambda config: False)  # the plain StaticCache: same tokens
    assert isinstance(gen.cache_for(3, model, 8), StaticCache)
    assert gen.greedy(model, enc["input_ids"], enc["attention_mask"], 10, []) == out
    model.config.sliding_window = 16
    assert not kv_cache.fits(model.config)


@pytest.mark.parametrize("n_rows", [6, 3])
def test_dropping_finished_rows_gives_transformers_greedy_output(random_micro, monkeypatch, n_rows):
    """greedy() drops rows from the batch and its KV cache as they stop: the tokens are model.generate()'s."""
    from forgetting import generate as gen

    model, tok = random_micro()
    texts = [gen.chat_prompt(tok, p) for p in ["How many apples?", "Tell me a long story about the market.", "Hi",
                                                "What is 2 + 2?", "Name a colour.", "Why?"]][:n_rows]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    width, pad = enc["input_ids"].shape[1], tok.pad_token_id or 0
    free = model.generate(**enc, max_new_tokens=20, do_sample=False, eos_token_id=gen.eos_ids(model, tok),
                          pad_token_id=pad)
    # one more stop token, so that rows end at different steps: row 0's 3rd token
    stops = sorted(set(gen.eos_ids(model, tok)) | {int(free[0, width + 2])})
    ref = model.generate(**enc, max_new_tokens=20, do_sample=False, eos_token_id=stops, pad_token_id=pad)
    drops = []
    cache_cls = type(gen.cache_for(len(texts), model, 8))
    monkeypatch.setattr(cache_cls, "reorder_cache",
                        lambda self, idx, orig=cache_cls.reorder_cache: (drops.append(len(idx)), orig(self, idx))[1])
    stats = {}
    out = gen.greedy(model, enc["input_ids"], enc["attention_mask"], 20, stops, stats=stats)
    for r, row in zip(ref[:, width:].tolist(), out):
        k = next((i for i, t in enumerate(r) if t in stops), None)
        assert row == (r if k is None else r[:k + 1])
    lengths = sorted(len(row) for row in out)
    assert lengths[0] < lengths[-1]  # rows stopped at different steps...
    assert drops and drops[-1] < len(texts)  # ...and the finished ones left the batch
    assert stats["rows"] == out and stats["row_steps"] == sum(lengths)  # make bench: no step on a finished row


def test_greedy_runs_models_without_logits_to_keep(micro_path):
    """Some causal LMs' forward has no `logits_to_keep`: greedy() then takes every position's logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forgetting import generate as gen

    inner = AutoModelForCausalLM.from_pretrained(micro_path).eval()
    tok = AutoTokenizer.from_pretrained(micro_path)

    class NoKeep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.config = inner, inner.config

        @property
        def device(self):
            return inner.device

        def forward(self, input_ids, attention_mask, position_ids, past_key_values, use_cache):
            return inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, use_cache=use_cache)

    tok.padding_side = "left"
    enc = tok([gen.chat_prompt(tok, "Hi"), gen.chat_prompt(tok, "How many apples are there?")], return_tensors="pt",
              padding=True, add_special_tokens=False)
    stops = gen.eos_ids(inner, tok)
    assert gen.greedy(NoKeep(), enc["input_ids"], enc["attention_mask"], 6, stops) == \
        gen.greedy(inner, enc["input_ids"], enc["attention_mask"], 6, stops)


def test_grouped_prefill_cuts_the_padding_and_keeps_every_token(random_micro, monkeypatch):
    """On CPU the prompt pass runs in groups of 8 length-sorted rows, each cut to its own longest prompt:
    the short group's pass is narrower than the batch, and the tokens are model.generate()'s."""
    from forgetting import generate as gen

    model, tok = random_micro()
    prompts = ["Hi", "Why?", "2 + 2", "Name it.", "A colour?", "How many?", "Count to three.", "Say yes.",
               "Tell me a long story about the market and the people who sell apples there every day.",
               "What is the sum of all the numbers from one to one hundred, written out in words?",
               "Describe the weather in a city by the sea during a long and windy winter afternoon.",
               "Explain how a bicycle works, from the pedals to the chain to the back wheel and the brakes."]
    texts = sorted((gen.chat_prompt(tok, p) for p in prompts), key=len)
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    width, pad = enc["input_ids"].shape[1], tok.pad_token_id or 0
    stops = gen.eos_ids(model, tok)
    ref = model.generate(**enc, max_new_tokens=12, do_sample=False, eos_token_id=stops, pad_token_id=pad)
    widths = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: (widths.append(k["input_ids"].shape[1]), forward(*a, **k))[1])
    assert gen.prefill_rows(len(texts), model) == 8
    model.config.sliding_window = 16  # a windowed cache may hold fewer positions than a group: one pass
    assert gen.prefill_rows(len(texts), model) == len(texts)
    model.config.sliding_window = None
    out = gen.greedy(model, enc["input_ids"], enc["attention_mask"], 12, stops)
    assert widths[:2] == [int(enc["attention_mask"][:8].sum(-1).max()), width] and widths[0] < width
    for r, row in zip(ref[:, width:].tolist(), out):
        k = next((i for i, t in enumerate(r) if t in stops), None)
        assert row == (r if k is None else r[:k + 1])
