"""GSM8K answer extraction and scoring.

`extract_answer(text)` returns the final answer as a normalised number string ("1234", "-5", "2.5")
or None. It looks, in this order, for

1. the first final-answer line: the earlier of `#### N` (the GSM8K gold format; what SFT on GSM8K
   teaches) and a line that opens with `The answer is N` / `The final answer is: N` (what the tiny
   preset and many instruct models write)
2. `\\boxed{N}`
3. `The answer is N` / `The final answer is: N` anywhere (any case; `**`, `$`, `:` allowed before N)
4. `Answer: N` / `A: N` on a line of its own (a bare `A:` that opens the reasoning is not an answer)
5. otherwise the last number in the text.

For the marked formats the FIRST match wins: a model that has answered often runs on into a new
made-up "Question: ..." whose numbers must not count (lm-evaluation-harness "strict-match" also takes
the first `####`). So a complete first final-answer line fixes the grade, whatever follows: generation
stops there (generate.answer_end). `The answer is` in mid-sentence ("so the answer is 5 per box") is
not a final-answer line: a later `####` or `\\boxed{}` still wins over it. GSM8K calculator
annotations `<<48/2=24>>` are removed before anything else.

Normalisation: thousands commas (`1,234`), `$`, `%`, a trailing sentence period and an all-zero
fraction (`.0`, `.00`) are dropped, leading zeros go, `-5` and the Unicode minus `−5` are negative
(a minus glued to a preceding digit, as in `5-3`, is subtraction, not a sign). A real decimal keeps
its fraction (`2.50` -> "2.5"), so it never equals an integer reference.
"""
from __future__ import annotations

import re

CALC = re.compile(r"<<[^<>]*>>")
# a number: optional sign (not glued to a preceding word/digit), optional $, 1,234 or 1234, fraction
_NUM = r"(?<![\w.])([-\u2212]?)\$?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?!\d)"
NUM = re.compile(_NUM)
_LEAD = r"(?:\s|\*\*|\$|\\\(|\\boxed\{|:)*"  # markup allowed between a marker and its number

MARKERS = (
    re.compile(r"####\s*" + _LEAD + _NUM),
    re.compile(r"\\boxed\{\s*" + _NUM + r"[^{}]*\}"),
    re.compile(r"(?i:the\s+(?:final\s+)?answer\s+is)" + _LEAD + _NUM),
    re.compile(r"(?m)(?:^|(?<=\s))(?:(?i:answer)|A)\s*:\s*" + _NUM
               + r"\s*(?:%|(?i:dollars?))?\s*\.?\**\s*$"),
)
# a line that opens with the answer (markup and spaces before it allowed): with `#### N`, a final-answer line
ANSWER_LINE = re.compile(r"(?m)^[ \t]*(?:\*\*)?(?i:the\s+(?:final\s+)?answer\s+is)" + _LEAD + _NUM)


def first_answer(text: str) -> re.Match | None:
    """The first final-answer line's match in `text` (calculator annotations already removed): the earlier of
    the first `#### N` and the first line opening with `The answer is N`."""
    found = [m for m in (MARKERS[0].search(text), ANSWER_LINE.search(text)) if m is not None]
    return min(found, key=lambda m: m.start(), default=None)


def _normalise(sign: str, integer: str, frac: str | None) -> str:
    value = str(int(integer.replace(",", "")))
    if frac and frac.strip("0"):
        value += "." + frac.rstrip("0")
    if sign and value != "0":
        value = "-" + value
    return value


def extract_answer(text: str | None) -> str | None:
    """The final answer in `text` as a normalised number string, or None if it has no number."""
    if not text:
        return None
    text = CALC.sub("", text)
    m = first_answer(text) or next(filter(None, (marker.search(text) for marker in MARKERS[1:])), None)
    if m is None:  # no marked answer: the last number
        for m in NUM.finditer(text):
            pass
    return _normalise(*m.groups()) if m else None


def is_correct(response: str, reference: str | int) -> bool:
    """Exact match of the normalised final numbers. `reference` is a GSM8K answer (text ending in
    `#### N`) or a bare number; a response or reference without a number is never correct."""
    ref = extract_answer(str(reference))
    pred = extract_answer(response)
    return ref is not None and pred is not None and pred == ref
