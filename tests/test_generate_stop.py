"""Math generation stops at the end of the first `#### N` line, and the grade never changes."""
import pytest
import torch

from forgetting.generate import AnswerLineStop, answer_end
from forgetting.math import extract_answer

TEXTS = [
    "She has 3 + 4 = 7 apples.\n#### 7\nQuestion: Tom has 9 pears...\n#### 9",
    "#### 1,234\nmore text 5",
    "The answer is 5.\n#### 6\nand then 7",
    "Work: 2 * 3 = 6\n####   -12\n\n#### 4",
    "#### 12.50\nnext",
]


@pytest.mark.parametrize("text", TEXTS)
def test_cutting_at_the_answer_line_keeps_the_grade(text):
    cut = answer_end(text)
    assert cut is not None and text[cut] == "\n"
    assert extract_answer(text[:cut]) == extract_answer(text)


@pytest.mark.parametrize("text", ["#### 12", "#### 1,2", "no answer yet\n", "The answer is 5.\n", "####\n"])
def test_no_cut_before_the_answer_line_is_complete(text):
    assert answer_end(text) is None


class CharTok:
    """One character per token id (enough to drive the stopping criterion)."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(int(i)) for i in (ids.tolist() if hasattr(ids, "tolist") else ids))


def test_stopping_criterion_stops_rows_independently():
    prompt = [ord("Q"), ord(":")]
    rows = ["x = 5\n#### 5\nQ", "still thinking\n", "#### 4"]
    width = max(map(len, rows))
    ids = torch.tensor([prompt + [ord(c) for c in r.ljust(width)] for r in rows])
    crit = AnswerLineStop(CharTok(), len(prompt))
    done = None
    for k in range(1, width + 1):  # replay the rows token by token
        done = crit(ids[:, : len(prompt) + k], None)
        if k == len("x = 5\n#### 5\n"):
            assert done.tolist() == [True, False, False]
    assert done.tolist() == [True, False, False]  # row 3 never ends its line


def test_batched_generation_with_the_static_cache_matches_one_at_a_time(micro_path):
    """Several rows on CPU use a preallocated (static) KV cache; one row the dynamic one. Both give the
    same greedy text, with left padding and rows of different lengths."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forgetting.generate import cache_for, generate

    model = AutoModelForCausalLM.from_pretrained(micro_path)
    tok = AutoTokenizer.from_pretrained(micro_path)
    assert cache_for(4, model) == "static" and cache_for(1, model) is None
    prompts = ["How many apples?", "Tell me a story about a very long day at the market with friends.", "Hi", "2 + 2"]
    batched = generate(model, tok, prompts, 24, batch_size=4)
    single = generate(model, tok, prompts, 24, batch_size=1)
    assert [g["response"] for g in batched] == [g["response"] for g in single]
    assert sum(g["n_tokens"] for g in batched) > 0
