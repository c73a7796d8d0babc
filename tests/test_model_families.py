"""The Llama-2, Mistral and Gemma presets ("Unforgotten Safety"'s three families): they compose and validate, name
their unaligned base, ship the published chat template byte for byte (rendering the prompts transformers made
from the hub's tokenizers), put a system prompt where each template can take it, stop Gemma at <end_of_turn>,
and their LoRA targets exist in their architectures. No hub access: tokenizers are built here with each family's
special tokens."""
import hashlib
import logging
from pathlib import Path

import pytest
from jinja2.exceptions import TemplateError

from forgetting import chat, download, models
from forgetting.config import base_model_ident, validate
from forgetting.errors import ConfigError
from forgetting.generate import chat_prompt
from forgetting.train import chat_rows

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "forgetting/assets/chat_templates"
# preset → (model, unaligned base, template file, sha256 of the published chat_template string)
PRESETS = {
    "llama2_7b_chat": ("meta-llama/Llama-2-7b-chat-hf", "meta-llama/Llama-2-7b-hf", "llama-2-chat.jinja",
                       "e8d5b5a546d3f19df16a5320c614fab05bdc4edd50e850f1afd947b503ea41cf"),
    "mistral_7b_instruct": ("mistralai/Mistral-7B-Instruct-v0.2", "mistral-community/Mistral-7B-v0.2",
                            "mistral-instruct.jinja",
                            "796853172235ab3aaa4810013ddfe2eab481bda3306dad4f700c00d436eed596"),
    "gemma_2b_it": ("google/gemma-2b-it", "google/gemma-2b", "gemma-it.jinja",
                    "ecd6ae513fe103f0eb62e8ab5bfa8d0fe45c1074fa398b089c93a7e70c15cfd6"),
}
SPECIAL = {  # the families' tokenizers' special tokens (bos, eos, unk, others)
    "llama2_7b_chat": ("<s>", "</s>", "<unk>", []),
    "mistral_7b_instruct": ("<s>", "</s>", "<unk>", []),
    "gemma_2b_it": ("<bos>", "<eos>", "<unk>", ["<pad>", "<start_of_turn>", "<end_of_turn>"]),
}
# The conversation of mistral.rs's and llama.cpp's chat-template tests, and the prompts transformers made from
# the hub's tokenizers there (Llama-2: labelled meta-llama/Llama-2-13b-chat-hf, the same template; Gemma: labelled
# google/gemma-7b-it, the same template; Mistral v0.2: llama.cpp's case, with the hub's <s> put back in front).
CONVERSATION = [("system", "You are a helpful assistant"), ("user", "Hello"), ("assistant", "Hi there"),
                ("user", "Who are you"), ("assistant", "   I am an assistant   "), ("user", "Another question")]
GOLDEN = {
    "llama2_7b_chat": "<s>[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there </s>"
                      "<s>[INST] Who are you [/INST] I am an assistant </s><s>[INST] Another question [/INST]",
    "mistral_7b_instruct": "<s> [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are you "
                           "[/INST]    I am an assistant   </s> [INST] Another question [/INST]",
    "gemma_2b_it": "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n"
                   "<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant"
                   "<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n",
}
# One user turn, then with a system prompt, as the run builds them (generate.chat_prompt)
ONE_TURN = {
    "llama2_7b_chat": ("<s>[INST] hi [/INST]", "<s>[INST] <<SYS>>\nBe safe.\n<</SYS>>\n\nhi [/INST]"),
    "mistral_7b_instruct": ("<s> [INST] hi [/INST]", "<s> [INST] Be safe.\n\nhi [/INST]"),
    "gemma_2b_it": ("<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
                    "<bos><start_of_turn>user\nBe safe.\n\nhi<end_of_turn>\n<start_of_turn>model\n"),
}


@pytest.fixture
def family_tok(compose, tmp_path):
    """family_tok(preset) → (tokenizer as models.tokenizer loads it for the preset, from a dir holding a tokenizer
    with the family's special tokens and no chat template; the model config)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    def make(preset: str):
        bos, eos, unk, extra = SPECIAL[preset]
        vocab = {t: i for i, t in enumerate([unk, bos, eos, *extra])}
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token=unk)), bos_token=bos,
                                      eos_token=eos, unk_token=unk, additional_special_tokens=extra)
        path = tmp_path / preset
        tok.save_pretrained(path)
        mcfg = compose([f"model={preset}"]).model
        return models.tokenizer(mcfg, str(path)), mcfg

    return make


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_validates_and_names_its_unaligned_base(compose, preset):
    cfg = compose([f"model={preset}"])
    validate(cfg)
    model, unaligned, template, _ = PRESETS[preset]
    m = cfg.model
    assert (m.name, m.name_or_path, m.unaligned, m.simulation) == (preset, model, unaligned, False)
    assert (m.dtype, m.load_in_4bit, m.trust_remote_code) == ("bfloat16", True, False)
    assert m.chat_template == f"pkg://chat_templates/{template}"
    assert list(cfg.lora.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.mark.parametrize("preset", PRESETS)
def test_download_dry_run_lists_the_model_and_its_unaligned_base(capsys, preset):
    model, unaligned, _, _ = PRESETS[preset]
    with pytest.raises(ConfigError, match="model.load_in_4bit=false"):  # the 4-bit preset: refused before any download
        download.run([f"model={preset}", "method=safelora"], dry_run=True)
    assert download.run([f"model={preset}", "model.load_in_4bit=false", "method=safelora"], dry_run=True) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(model in ln and "policy model" in ln for ln in lines)
    assert any(unaligned in ln and "unaligned model (method safelora)" in ln for ln in lines)


@pytest.mark.parametrize("preset", PRESETS)
def test_shipped_template_is_the_published_string(preset):
    _, _, template, sha = PRESETS[preset]
    data = (TEMPLATES / template).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha
    readme = (TEMPLATES / "README.md").read_text()
    assert f"`{template}`" in readme and sha in readme  # the provenance note records the same digest


@pytest.mark.parametrize("preset", PRESETS)
def test_template_renders_the_prompt_transformers_made_from_the_hub(family_tok, preset):
    tok, _ = family_tok(preset)
    assert tok.chat_template == (TEMPLATES / PRESETS[preset][2]).read_text()
    turns = [{"role": r, "content": c} for r, c in CONVERSATION]
    if preset == "gemma_2b_it":
        with pytest.raises(TemplateError, match="System role not supported"):  # the published behaviour
            tok.apply_chat_template(turns, tokenize=False)
        turns = turns[1:]
    assert tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True) == GOLDEN[preset]


@pytest.mark.parametrize("preset", PRESETS)
def test_system_prompt_goes_where_the_template_takes_it(family_tok, preset):
    tok, _ = family_tok(preset)
    assert (chat_prompt(tok, "hi"), chat_prompt(tok, "hi", "Be safe.")) == ONE_TURN[preset]
    assert chat.has_system_role(tok) == (preset != "gemma_2b_it")


def test_gemma_training_rows_fold_the_system_prompt_and_say_so_once(family_tok, monkeypatch, caplog):
    tok, _ = family_tok("gemma_2b_it")
    monkeypatch.setattr(chat, "_HAS_SYSTEM", {})
    rows = [{"prompt": "2+2?", "completion": "4"}, {"prompt": "3+3?", "completion": "6"}]
    with caplog.at_level(logging.WARNING, logger="forgetting.chat"):
        out = chat_rows(rows, "Be safe.", tokenizer=tok)
        chat_prompt(tok, "hi", "Be safe.")
    assert [r["prompt"] for r in out] == [[{"role": "user", "content": "Be safe.\n\n2+2?"}],
                                          [{"role": "user", "content": "Be safe.\n\n3+3?"}]]
    assert len([r for r in caplog.records if "no system role" in r.getMessage()]) == 1
    # the row renders: the template sees no system turn
    tok.apply_chat_template(out[0]["prompt"] + out[0]["completion"], tokenize=False)
    # Llama-2 keeps its system turn
    llama, _ = family_tok("llama2_7b_chat")
    assert chat_rows(rows[:1], "Be safe.", tokenizer=llama)[0]["prompt"][0] == {"role": "system",
                                                                              "content": "Be safe."}


def test_gemma_stops_at_end_of_turn(family_tok):
    from transformers import GemmaConfig, GemmaForCausalLM

    tok, mcfg = family_tok("gemma_2b_it")
    model = GemmaForCausalLM(GemmaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         head_dim=8))
    model.generation_config.eos_token_id = tok.eos_token_id
    models.add_eos_tokens(model, tok, mcfg.eos_tokens)
    assert model.generation_config.eos_token_id == [tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")]
    with pytest.raises(ConfigError, match="<eot>"):
        models.add_eos_tokens(model, tok, ["<eot>"])


@pytest.mark.parametrize("preset,arch", [("llama2_7b_chat", "Llama"), ("mistral_7b_instruct", "Mistral"),
                                         ("gemma_2b_it", "Gemma")])
def test_lora_targets_are_the_architectures_attention_projections(compose, preset, arch):
    import transformers
    from peft import get_peft_model

    from forgetting.train import lora_config

    config = getattr(transformers, f"{arch}Config")(vocab_size=32, hidden_size=16, intermediate_size=32,
                                                    num_hidden_layers=1, num_attention_heads=2,
                                                    num_key_value_heads=1, head_dim=8)
    model = get_peft_model(getattr(transformers, f"{arch}ForCausalLM")(config),
                           lora_config(compose([f"model={preset}"]).lora))
    adapted = {".".join(n.split(".lora_A.")[0].split(".")[-2:]) for n, _ in model.named_parameters()
               if ".lora_A." in n}  # ….layers.0.self_attn.q_proj.lora_A.default.weight → self_attn.q_proj
    assert adapted == {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}


def test_a_missing_template_file_fails_before_any_model_loads(compose):
    with pytest.raises(ConfigError, match="model.chat_template file not found"):
        validate(compose(["model=gemma_2b_it", "model.chat_template=pkg://chat_templates/nope.jinja"]))


def test_the_preset_template_replaces_the_models_own_and_says_so(family_tok, tmp_path, caplog):
    from transformers import AutoTokenizer

    tok, mcfg = family_tok("llama2_7b_chat")
    tok.chat_template = "{{ messages[0]['content'] }}"  # a tokenizer whose own template is another one
    tok.save_pretrained(tmp_path / "own")
    assert AutoTokenizer.from_pretrained(tmp_path / "own").chat_template == "{{ messages[0]['content'] }}"
    with caplog.at_level(logging.INFO, logger="forgetting.models"):
        loaded = models.tokenizer(mcfg, str(tmp_path / "own"))
    assert loaded.chat_template == (TEMPLATES / "llama-2-chat.jinja").read_text()
    assert any("differs from model.chat_template" in r.getMessage() for r in caplog.records)


def test_new_model_fields_keep_the_cache_keys_of_existing_presets(compose):
    ident = base_model_ident(compose(["model=llama3_2_1b_instruct"]).model)
    assert "chat_template" not in ident and "eos_tokens" not in ident
    gemma = base_model_ident(compose(["model=gemma_2b_it"]).model)
    assert gemma["chat_template"] == "pkg://chat_templates/gemma-it.jinja" and gemma["eos_tokens"] == ["<end_of_turn>"]


@pytest.mark.parametrize("preset", PRESETS)
def test_a_training_rows_prompt_is_a_prefix_of_its_full_text(family_tok, preset):
    """TRL's prompt-completion rows: the loss covers what the full text adds after the prompt, which needs the
    prompt (with the generation prompt) to be a prefix of prompt + completion."""
    tok, _ = family_tok(preset)
    row = chat_rows([{"prompt": "What is 2 + 2?", "completion": "2 + 2 = 4.\n#### 4"}], "Be safe.", tokenizer=tok)[0]
    prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    assert full.startswith(prompt) and "#### 4" in full[len(prompt):]
