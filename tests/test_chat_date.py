"""The chat template's date is pinned (cfg.date_string): Llama 3.x templates print "Today Date" from the
calendar unless `date_string` is passed, in generation, reference NLL and TRL's training rows alike."""
import datetime
import inspect

import pytest
from omegaconf import OmegaConf
from transformers.utils import chat_template_utils

from forgetting import evaluate, train
from forgetting import generate as G
from forgetting.config import DATE_STRING

# the date logic of the Llama 3.2 Instruct template, around a plain header / turn layout
TEMPLATE = (
    '{{- bos_token }}{%- if not date_string is defined %}{%- if strftime_now is defined %}'
    '{%- set date_string = strftime_now("%d %b %Y") %}{%- else %}{%- set date_string = "26 Jul 2024" %}'
    '{%- endif %}{%- endif %}'
    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\nToday Date: " + date_string + "\\n\\n<|eot_id|>" }}'
    "{%- for m in messages %}{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] "
    "+ '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")
PINNED = "03 Mar 2003"


@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(["Today Date: 26 Jul 2024 system user assistant What is 2 + 2? 2 + 2 = 4."],
                          trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|pad|>", model_max_length=256)
    fast.chat_template = TEMPLATE
    return fast


@pytest.fixture(scope="module")
def model(tok):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))


@pytest.fixture
def calendar(monkeypatch):
    """calendar(y, m, d): the date transformers' `strftime_now` (the template's clock) sees from now on."""
    def set_today(*ymd):
        class Today(datetime.datetime):
            @classmethod
            def now(cls, tz=None):
                return cls(*ymd)

        monkeypatch.setattr(chat_template_utils, "datetime", Today)

    return set_today


def bound(fn, args, kwargs) -> str:
    return inspect.signature(fn).bind(*args, **kwargs).arguments.get("date_string", DATE_STRING)


def test_pinned_date_makes_prompts_calendar_independent(tok, calendar):
    msgs = [{"role": "user", "content": "What is 2 + 2?"}]
    renders = []
    for day in (1, 2):
        calendar(2030, 1, day)
        renders.append((tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                        G.chat_prompt(tok, "What is 2 + 2?"), G.chat_prompt(tok, "What is 2 + 2?", None, PINNED)))
    (free1, default1, pinned1), (free2, default2, pinned2) = renders
    assert "Today Date: 01 Jan 2030" in free1 and "Today Date: 02 Jan 2030" in free2  # the unpinned template moves
    assert default1 == default2 and f"Today Date: {DATE_STRING}\n" in default1
    assert pinned1 == pinned2 and f"Today Date: {PINNED}\n" in pinned1


def test_generate_and_nll_render_with_the_date(tok, model, calendar, monkeypatch):
    calendar(2030, 1, 1)
    seen = []
    real = G.chat_prompt
    monkeypatch.setattr(G, "chat_prompt", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    G.generate(model, tok, ["What is 2 + 2?"], 2, 1, None, "t", PINNED)
    G.completion_nll(model, tok, ["What is 2 + 2?"], ["4"], 1, date_string=PINNED)
    assert len(seen) == 2 and all(f"Today Date: {PINNED}\n" in s for s in seen)


@pytest.mark.parametrize("date", [PINNED, None])
def test_evaluation_passes_cfg_date_string(monkeypatch, date):
    calls = []

    def spy(real, result):
        def fake(*a, **k):
            calls.append(bound(real, a, k))
            return result(a[2])
        return fake

    monkeypatch.setattr(evaluate, "generate", spy(G.generate, lambda p: [
        {"response": "#### 4", "n_tokens": 2, "stopped": True} for _ in p]))
    monkeypatch.setattr(evaluate, "completion_nll", spy(G.completion_nll, lambda p: (1.0, [1.0] * len(p))))
    cfg = OmegaConf.create({"data": {"prompt_template": "{question}", "strip_calculator": True},
                            "eval": {"system_prompt": None, "math": {"max_new_tokens": 4, "batch_size": 2},
                                     "over_refusal": {"max_new_tokens": 4, "batch_size": 2}},
                            **({"date_string": date} if date else {})})
    rows = [{"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}]
    m, _ = evaluate.math_eval(None, None, rows, [], cfg)
    evaluate.over_refusal_eval(None, None, [{"id": "1", "type": "t", "prompt": "Hi"}], cfg)
    assert m["math/accuracy"] == 1.0 and calls == [date or DATE_STRING] * 3


@pytest.mark.parametrize("date", [PINNED, None])
def test_sft_training_rows_carry_the_date(tok, model, calendar, tmp_path, date):
    calendar(2030, 1, 1)
    cfg = OmegaConf.create({
        "optimizer": {"name": "adamw_torch", "weight_decay": 0.0, "warmup_ratio": 0.0, "lr_scheduler_type": "constant",
                      "batch_size": 2, "grad_accum": 1, "max_grad_norm": 1.0, "max_length": 128},
        "lr": 1e-3, "epochs": 1, "seed": 0, "eval": {"system_prompt": None}, "lora": {"enabled": False},
        **({"date_string": date} if date else {})})
    rows = [{"prompt": "What is 2 + 2?", "completion": "2 + 2 = 4."}] * 2
    trainer, _ = train.make_trainer(model, tok, rows, cfg, tmp_path)
    text = tok.decode(trainer.train_dataset[0]["input_ids"])
    assert f"Today Date: {date or DATE_STRING}\n" in text and "2030" not in text
    batch = next(iter(trainer.get_train_dataloader()))  # the kwargs column never reaches the collator's batch
    assert "chat_template_kwargs" not in batch and batch["input_ids"].shape[0] == 2
