"""The messages of one chat prompt. A system prompt (eval.system_prompt) goes in a system turn where the model's
chat template has one; a template that rejects a system turn (Gemma's raises "System role not supported") gets
it at the head of the first user turn, then a blank line: what Mistral v0.2's own template does with a system
message. Said once per template in the log."""
from __future__ import annotations

import logging

from jinja2.exceptions import TemplateError

log = logging.getLogger(__name__)
_HAS_SYSTEM: dict[str, bool] = {}  # chat template → does it take a system turn


def has_system_role(tokenizer) -> bool:
    """Does the tokenizer's chat template render a system turn? (tried once per template: a template that fails
    on a user turn alone is broken, and raises here)"""
    template = str(tokenizer.chat_template)
    if template not in _HAS_SYSTEM:
        user = [{"role": "user", "content": "u"}]
        try:
            tokenizer.apply_chat_template([{"role": "system", "content": "s"}, *user], tokenize=False,
                                          add_generation_prompt=True)
            _HAS_SYSTEM[template] = True
        except TemplateError as e:
            tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
            _HAS_SYSTEM[template] = False
            log.warning("the chat template has no system role (%s): a system prompt goes at the head of the first "
                        "user turn, then a blank line", e)
    return _HAS_SYSTEM[template]


def messages(tokenizer, user: str, system: str | None = None) -> list[dict]:
    """[system turn,] user turn, for `tokenizer`'s chat template (see the module's docstring)."""
    if not system:
        return [{"role": "user", "content": user}]
    if has_system_role(tokenizer):
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return [{"role": "user", "content": f"{system}\n\n{user}"}]
