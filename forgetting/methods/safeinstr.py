"""SafeInstr (Bianchi et al., ICLR 2024, "Safety-Tuned LLaMAs"): a fixed number of safety demonstrations, harmful
instructions with safe answers, added once to the user's fine-tuning data as ordinary examples (the paper: 100 to
2,000 of them added to 20,000 Alpaca rows; "3 %" is its headline share).
The rows come from the safety memory: by default the base model's own refusals (memory.py) or memory.path; the
authors' released pairs with memory=safety_tuned_llamas (downloaded). They are drawn once, without replacement, in
a seeded order keyed on each prompt (data.rank): the same rows whatever order the memory lists them in, and the
rows of a smaller n among those of a larger one.
Beside replay: both put memory rows into the one training stream, trained like user rows. replay sets the memory's
share of the stream (ratio r: r/(1 − r) · N rows) and cycles through the memory, repeating rows, when it holds fewer;
safeinstr adds a count of distinct rows (n, or share · N) and stops when the memory holds fewer."""
from __future__ import annotations

from .. import data
from ..errors import ConfigError
from .base import Method


def draw(memory: list[dict], k: int, seed: int) -> list[dict]:
    """k distinct memory rows, the first k in the seeded prompt order."""
    if k > len(memory):
        raise ConfigError(f"safeinstr adds {k} safety rows but the safety memory holds {len(memory)}: raise "
                          "memory.size (the base's refusals can be fewer), use a bigger memory.path or "
                          "memory=safety_tuned_llamas, or lower method.n / method.share")
    return [dict(r, source="memory") for r in data.ranked(memory, seed)[:k]]


class SafeInstr(Method):
    needs_memory = True

    def __init__(self, name: str = "safeinstr", n: int | None = None, share: float = 0.03):
        if n is not None and n < 0 or not 0 <= share < 1:
            raise ConfigError(f"safeinstr needs n >= 0 (or null) and share in [0, 1), got n={n}, share={share}")
        super().__init__(name, n=n, share=share)

    def count(self, n_rows: int) -> int:
        return self.n if self.n is not None else round(self.share * n_rows)

    def train_rows(self, rows, memory, seed):
        return rows + draw(memory, self.count(len(rows)), seed)
