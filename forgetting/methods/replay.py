"""Replay: safety-memory rows mixed into the user's training stream at a share of it, repeated when the memory is
smaller (SafeInstr's mix as a share; safeinstr.py adds the paper's count of distinct rows)."""
from __future__ import annotations

import random

from ..errors import ConfigError
from .base import Method


def mix(rows: list[dict], memory: list[dict], ratio: float, seed: int) -> list[dict]:
    """rows + round(ratio / (1 - ratio) · len(rows)) memory rows, so memory is `ratio` of the stream.
    Memory rows are drawn without replacement, cycling through a seeded order when more are needed."""
    k = round(ratio / (1 - ratio) * len(rows))
    order = list(range(len(memory)))
    random.Random(seed).shuffle(order)
    return rows + [dict(memory[order[i % len(order)]], source="memory") for i in range(k)]


class Replay(Method):
    needs_memory = True

    def __init__(self, name: str = "replay", ratio: float = 0.1):
        if not 0 <= ratio < 1:
            raise ConfigError(f"replay ratio must be in [0, 1), got {ratio}")
        super().__init__(name, ratio=ratio)

    def train_rows(self, rows, memory, seed):
        return mix(rows, memory, self.ratio, seed)
