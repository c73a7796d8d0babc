"""A preallocated KV cache whose attention reads only the filled positions. transformers' StaticCache hands
attention its whole buffer (prompt + max_new_tokens) at every step and masks the unused tail; on CPU, decoding
reads the keys and values from memory at each step, so those masked slots cost time. Hand-written: transformers
has no cache that is preallocated and returns only the filled part."""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, StaticLayer


class FilledLayer(StaticLayer):
    """A StaticLayer (preallocated, written in place) that returns, and masks, only its first `filled`
    positions. Its own allocation and writes: the buffer is left uninitialised (never read past `filled`; zeroing
    it was 2.5 % of a safety-prompt batch) and written by slice with a Python position (StaticLayer's index_copy_
    with a tensor position is a few more ops per layer and step)."""

    is_compileable = False  # the returned views change shape at every step
    is_croppable = False

    def __init__(self, max_cache_len: int, **kwargs):
        super().__init__(max_cache_len, **kwargs)
        self.filled = 0  # a Python int: cumulative_length is a tensor, reading it would be a sync per layer

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        b, h = key_states.shape[:2]
        self.keys = key_states.new_empty((b, h, self.max_cache_len, key_states.shape[-1]))
        self.values = value_states.new_empty((b, h, self.max_cache_len, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, self.filled = self.filled, self.filled + key_states.shape[-2]
        self.keys[:, :, start:self.filled] = key_states
        self.values[:, :, start:self.filled] = value_states
        return self.keys[:, :, :self.filled], self.values[:, :, :self.filled]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.filled + query_length, 0

    def get_seq_length(self) -> int:
        return self.filled

    def reset(self) -> None:
        self.filled = 0


class FilledCache(Cache):
    """Preallocated for `max_cache_len` positions per row; attention sees the filled ones. Models whose layers are
    all full attention (Llama): with a sliding window, use StaticCache."""

    def __init__(self, config, max_cache_len: int):
        text = config.get_text_config(decoder=True)
        super().__init__(layers=[FilledLayer(max_cache_len) for _ in range(text.num_hidden_layers)])


def fits(config) -> bool:
    """Every layer full attention, no sliding window: the cache holds every position, so FilledCache can stand in
    for StaticCache and the prompt pass may run in groups (generate.prefill_rows)."""
    text = config.get_text_config(decoder=True)
    types = getattr(text, "layer_types", None) or ["full_attention"]
    return not getattr(text, "sliding_window", None) and all(t == "full_attention" for t in types)
