"""The offline preset builder (forgetting.tiny), on the micro recipe only."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": "/tmp/hf"}.items():
    os.environ.setdefault(k, v)

from omegaconf import OmegaConf  # noqa: E402

from forgetting import data  # noqa: E402
from forgetting.tiny import build, builder, corpus, preset_dir, refusals  # noqa: E402

MICRO = Path(__file__).resolve().parents[1] / "conf" / "model" / "micro.yaml"


def micro_recipe() -> dict:
    return OmegaConf.to_container(OmegaConf.load(MICRO).build, resolve=True)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    return root, build(micro_recipe(), root)


@pytest.fixture(scope="module")
def tok(built):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(built[1])


def test_builds_and_loads_with_auto_classes(built, tok):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    root, path = built
    assert path.parent == root and path.name.startswith("micro-") and len(path.name) == len("micro-") + 12
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    assert isinstance(model, LlamaForCausalLM)
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    assert sum(p.numel() for p in model.parameters()) < 100_000
    assert 256 < len(tok) <= 500 and model.config.vocab_size == len(tok)
    assert tok.eos_token == "<|end|>" and tok.bos_token == "<|begin|>" and tok.pad_token == "<|pad|>"
    assert model.generation_config.eos_token_id == tok.eos_token_id
    report = json.loads((path / "build_report.json").read_text())
    assert report["params"] == sum(p.numel() for p in model.parameters()) and "quality" not in report
    assert report["align"]["final_loss"] is not None
    assert not [p for p in root.iterdir() if ".tmp-" in p.name]  # the temp build dir was renamed away


def test_second_call_reuses_the_cache(built, monkeypatch):
    root, path = built
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(builder, "build_into", lambda *a, **k: calls.append(a))
    assert build(micro_recipe(), root) == path
    assert calls == [] and (path / "model.safetensors").stat().st_mtime_ns == mtime


def test_an_incomplete_build_is_not_reused(tmp_path, monkeypatch):
    def fail(recipe, out):
        (out / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(builder, "build_into", fail)
    with pytest.raises(RuntimeError):
        build(micro_recipe(), tmp_path)
    assert not preset_dir(micro_recipe(), tmp_path).exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_same_recipe_gives_identical_weights_in_another_root(built, tmp_path):
    other = build(micro_recipe(), tmp_path)
    assert other.name == built[1].name
    assert sha(other / "model.safetensors") == sha(built[1] / "model.safetensors")
    assert sha(other / "tokenizer.json") == sha(built[1] / "tokenizer.json")


def test_a_changed_recipe_value_gives_another_dir_and_weights(built, tmp_path):
    r = micro_recipe()
    r["seed"] = 1
    assert preset_dir(r, tmp_path).name != built[1].name
    r2 = micro_recipe()
    r2["align"]["lr"] = 1e-3
    assert preset_dir(r2, tmp_path).name != built[1].name
    r3 = micro_recipe()  # another pretraining stage: other weights, another unaligned checkpoint
    r3["pretrain"] = {"epochs": 1, "n_texts": 24, "batch_size": 8, "lr": 3e-3}
    other = build(r3, tmp_path)
    assert other.name != built[1].name
    assert sha(other / "model.safetensors") != sha(built[1] / "model.safetensors")
    assert json.loads((other / "build_report.json").read_text())["pretrain"]["steps"] == 3
    assert sha(other / "unaligned" / "model.safetensors") != sha(other / "model.safetensors")
    r4 = micro_recipe()  # no pretraining stage: no unaligned checkpoint
    r4["pretrain"] = None
    assert not (build(r4, tmp_path) / "unaligned").exists()


def test_alignment_can_replay_pretraining_texts(built, tmp_path):
    r = micro_recipe()
    r["align"]["replay"] = 8
    other = build(r, tmp_path)
    rep, plain = (json.loads((p / "build_report.json").read_text()) for p in (other, built[1]))
    assert rep["replayed_texts"] == 8 and "replayed_texts" not in plain
    assert rep["align"]["tokens_per_epoch"] > plain["align"]["tokens_per_epoch"]
    assert sha(other / "model.safetensors") != sha(built[1] / "model.safetensors")
    # the replay changes the alignment only: same tokenizer, same unaligned checkpoint
    assert sha(other / "tokenizer.json") == sha(built[1] / "tokenizer.json")
    assert sha(other / "unaligned" / "model.safetensors") == sha(built[1] / "unaligned" / "model.safetensors")


def test_a_stage_can_turn_length_grouped_batches_off(monkeypatch, tmp_path):
    """tiny_math pretrains in random batches: grouped ones (one template each) did not learn arith."""
    from forgetting.tiny import train

    seen = []

    class Spy:
        def __init__(self, model, args, **kw):
            seen.append(args.train_sampling_strategy)
            raise RuntimeError("stop")

    monkeypatch.setattr(train, "WeightedTrainer", Spy)
    for stage in ({"group_by_length": False}, {"group_by_length": True}, {}):
        with pytest.raises(RuntimeError, match="stop"):
            train.run(None, [], 0, stage, 0, str(tmp_path))
    assert seen == ["random", "group_by_length", "group_by_length"]


def test_pretraining_drills_are_correct_sums_in_the_arith_ranges():
    import re

    texts = corpus.drills(seed=0, n=200, max_value=200, per_text=16)
    lines = [x for t in texts for x in t.split("\n")]
    assert len(texts) == 13 and len(lines) == 200 and corpus.drills(0, 200) == texts
    for line in lines:
        a, op, b, r = re.fullmatch(r"(\d+) ([-+*]) (\d+) = (\d+)", line).groups()
        assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(r)
        assert 2 <= int(r) <= 200
    assert {ln.split()[1] for ln in lines} == {"+", "-", "*"}


def test_split_digits_tokenizer_gives_one_token_per_digit():
    from forgetting.tiny.tok import train_tokenizer

    texts = ["Tom has 187 apples and 87 pears, 1870 in all."] * 50
    split = train_tokenizer(texts, 300, 64, split_digits=True)
    plain = train_tokenizer(texts, 300, 64, split_digits=False)
    digits = [t for t in split.tokenize("Tom has 187 apples") if any(c.isdigit() for c in t)]
    assert digits == ["1", "8", "7"]
    assert any(sum(c.isdigit() for c in t) > 1 for t in plain.tokenize("Tom has 187 apples"))
    assert split.decode(split("Tom has 187 apples")["input_ids"]) == "Tom has 187 apples"


def test_chat_template_prefix_eos_and_assistant_mask(tok, built):
    assert (built[1] / "chat_template.jinja").is_file()
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": "2 + 3 = 5."}, {"role": "user", "content": "And 4 + 4?"},
            {"role": "assistant", "content": "4 + 4 = 8."}]
    full = tok.apply_chat_template(msgs, tokenize=False)
    prompt = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
    assert full.startswith(prompt) and full == prompt + "4 + 4 = 8.<|end|>\n"
    assert full.startswith("<|begin|><|system|>\nBe brief.<|end|>\n<|user|>\nWhat is 2 + 3?<|end|>\n<|assistant|>\n")
    assert full.count("<|begin|>") == 1
    # the templated prompt tokenizes to a prefix of the full conversation, without a second BOS
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    f_ids = tok(full, add_special_tokens=False)["input_ids"]
    assert f_ids[: len(p_ids)] == p_ids and p_ids.count(tok.bos_token_id) == 1
    assert tok(prompt)["input_ids"].count(tok.bos_token_id) == 1
    enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    assert ids == f_ids
    marked = [i for i, m in zip(ids, mask) if m]
    want = tok("2 + 3 = 5.<|end|>", add_special_tokens=False)["input_ids"] + \
        tok("4 + 4 = 8.<|end|>", add_special_tokens=False)["input_ids"]
    assert marked == want and marked.count(tok.eos_token_id) == 2


def test_alignment_prompts_are_disjoint_from_the_safety_eval(built):
    r = micro_recipe()
    used = json.loads((built[1] / "alignment_prompts.json").read_text())
    ex = r["exclude_eval"]
    held = data.safety_eval_ids(ex["path"], ex["n_public"], ex["n_private"], ex["seed"])
    assert len(used) == r["data"]["n_harmful"] and len(held) == 80
    assert not set(used) & held
    # all non-evaluation prompts are used when n_harmful is null (the tiny recipe)
    rows, _, held_rows = corpus.alignment({**r, "data": {**r["data"], "n_harmful": None}})
    harm = {x["prompt"] for x in rows if x["kind"] == "refuse"}
    assert len(harm) == 1200 - 80 and not harm & held and {x["prompt_text"] for x in held_rows} == held


def test_refusal_matcher_agrees_with_the_training_data():
    assert all(refusals.is_refusal(t) for t in refusals.all_responses())
    ben, ev = corpus.benign(0, 600, 30)
    assert not [b["answer"] for b in ben if refusals.is_refusal(b["answer"])]
    assert all(e["expected"] in e["answer"] for e in ev)
    assert not {e["prompt"] for e in ev} & {b["prompt"] for b in ben}
    xs = [x["prompt"] for x in data.xstest(data.resolve("pkg://xstest/xstest_prompts.csv"))]
    assert not set(xs) & {b["prompt"] for b in ben}  # XSTest is the over-refusal test set: never trained on
