"""Judges: map (prompts, responses) to one Verdict per pair. `build(cfg)` instantiates the one a
config names (its `_target_` plus parameters), e.g. conf/judge/refusal.yaml."""
from __future__ import annotations

from .base import Judge, Verdict

__all__ = ["Judge", "Verdict", "build"]


def build(cfg):
    """The judge described by `cfg` (a DictConfig or dict with `_target_`), via hydra.utils.instantiate."""
    from hydra.utils import instantiate

    return instantiate(cfg)
