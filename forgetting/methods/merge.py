"""Task arithmetic on the fine-tuned delta (Ilharco et al., 2023): after training, the user task vector is
scaled by lambda, θ = θ_aligned + λ·Δθ. λ = 0 is the aligned model, λ = 1 the plain fine-tune, in between
a point on merging's own safety / utility curve. Under LoRA Δθ = scaling·B·A, so scaling B by λ is exact
and the saved adapter is the merged one (PEFT's add_weighted_adapter would build a second adapter for
the same result); for a full fine-tune the weights move back toward a copy taken before training."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Method
from .ewc import lora_layers
from .trainer import is_peft


class Merge(Method):
    post_hoc = True  # trains exactly as sft: an identical sft training is reused (reuse.py)
    def __init__(self, name: str = "merge", lam: float = 0.5):
        if lam < 0:
            raise ConfigError(f"merge lam must be >= 0, got {lam}")
        super().__init__(name, lam=lam)
        self._start = None

    def setup(self, trainer):
        if not is_peft(trainer.model):
            self._start = [p.detach().clone() for p in trainer.model.parameters()]

    def after_training(self, model):
        if is_peft(model):
            with torch.no_grad():
                for layer in lora_layers(model):
                    for a in layer.active_adapters:
                        layer.lora_B[a].weight.mul_(self.lam)
        else:
            with torch.no_grad():
                for p, p0 in zip(model.parameters(), self._start):
                    p.copy_(p0 + self.lam * (p - p0))
        self._start = None
        return model
