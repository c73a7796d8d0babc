"""Byte-level BPE tokenizer trained on the shipped text, with the preset's chat template."""
from __future__ import annotations

BOS, EOS, PAD = "<|begin|>", "<|end|>", "<|pad|>"
ROLES = ("<|user|>", "<|assistant|>", "<|system|>")
SPECIALS = [PAD, BOS, EOS, *ROLES]

# <|begin|><|user|>\n{content}<|end|>\n<|assistant|>\n{answer}<|end|>\n ; the assistant content and
# its <|end|> sit inside {% generation %} so assistant-only losses and masks see exactly them.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('roles must be system, user or assistant, not ' + m['role']) }}{% endif %}"
    "{% if m['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' }}{% generation %}{{ m['content'] + eos_token }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ '<|' + m['role'] + '|>\\n' + m['content'] + eos_token + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def train_tokenizer(texts: list[str], vocab_size: int, max_length: int, split_digits: bool = False):
    """split_digits: every digit is its own token (as in LLaMA 1), so '87' is always '8','7' and a small
    model can learn column arithmetic; plain BPE merges digits inconsistently ('87' once, '8'+'7' elsewhere)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)  # no BOS added: the template adds it
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   extra_special_tokens=list(ROLES), model_max_length=max_length)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def encode_chat(tok, row: dict, max_length: int):
    """→ (input_ids, assistant mask) for one {prompt, answer[, system]} row; long prompts are cut from
    the left of the user content so the answer always fits."""
    msgs = ([{"role": "system", "content": row["system"]}] if row.get("system") else [])
    msgs += [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["answer"]}]
    enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    if len(ids) > max_length:
        cut = len(ids) - max_length  # drop tokens right after the user header (keeps template + answer)
        start = ids.index(tok.convert_tokens_to_ids("<|user|>")) + 2
        ids, mask = ids[:start] + ids[start + cut:], mask[:start] + mask[start + cut:]
    return ids, mask
