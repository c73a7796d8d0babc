"""A-GEM (Chaudhry et al., 2019): when the task gradient g conflicts with the memory gradient g_ref
(g·g_ref < 0), use g − (g·g_ref / ‖g_ref‖²) g_ref, so the step does not raise the memory loss (to first order).
With gradient accumulation, g is the gradient accumulated over the optimizer step, projected once, after its last
micro-batch, against one reference gradient (one memory batch per optimizer step)."""
from __future__ import annotations

import torch

from .base import Method


def project(g: torch.Tensor, g_ref: torch.Tensor) -> tuple[torch.Tensor, bool]:
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g, False
    return g - dot / torch.dot(g_ref, g_ref).clamp_min(1e-12) * g_ref, True


def flat_grad(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def write_grad(params: list[torch.Tensor], flat: torch.Tensor) -> None:
    i = 0
    for p in params:
        p.grad = flat[i:i + p.numel()].view_as(p).to(p.dtype).clone()
        i += p.numel()


class AGEM(Method):
    needs_memory = True
    memory_batches = True

    def __init__(self, name: str = "agem"):
        super().__init__(name)
        self.projected, self.steps = 0, 0

    def after_backward(self, trainer, model):
        if not trainer.accelerator.sync_gradients:  # not the optimizer step's last micro-batch: keep accumulating
            return
        params = [p for p in model.parameters() if p.requires_grad]
        g = flat_grad(params)
        for p in params:
            p.grad = None
        mb = trainer.memory_batch()
        with trainer.compute_loss_context_manager():
            mem_loss = trainer.lm_loss(model, mb)  # TRL's fused LM head where the task loss uses it
        trainer.accelerator.backward(mem_loss)
        g_new, hit = project(g, flat_grad(params))
        write_grad(params, g_new)
        self.steps += 1
        self.projected += hit
        trainer._metrics["train"]["method/agem_projected"].append(float(hit))
