"""Refresh Learning (Wang et al., ICLR 2024, "A Unified and General Framework for Continual Learning"): each step
first unlearns the current batch, a small noisy gradient-ascent step on its loss damped by the Fisher of the earlier
task, then relearns it: the run's usual descent step, taken from the unlearned weights.

The rule is the authors' code's (github.com/joey-wang123/CL-refresh-learning, models/derpp.py: Derpp.unlearn for
the step, Derpp.end_task for F), read, not copied. For each trainable tensor θ, with g = ∇θ of the batch's loss:

    θ ← θ + δ · (‖θ‖ · g / ‖g‖ + σ · ξ) / (1 + γ · F),    ξ ~ N(0, I), elementwise

δ = unlearn_lr, σ = noise, γ = fisher_damping (theirs: 1e-5, 1e-3, 1e-3). Their ascent is an SGD step on −CE in a
copy of the network, rescaled to the tensor's norm, so the copy's learning rate cancels. (The paper derives the step
as a noisy (Langevin) ascent preconditioned by the inverse Fisher; the code is what ran, and is followed here.)
Their F, after each task, is the mean over its examples of p(y|x) · (∇ log p(y|x))², the sum over tasks decayed by
1e-5. The one earlier task here is the alignment, so F is taken once, before the first step, with the aligned model
on the safety memory (`fisher_samples` rows; 0: F = 0, as during their first task). A response is one example, its
log p(y|x) the mean token log-probability (a whole sequence's probability vanishes for long answers).

Relearn is the run's own step (its optimizer and loss): plain SFT by default; `alpha` / `beta` add DER's memory
terms to it (alpha 0.1, beta 0.5: DER++ + Refresh, the combination the authors' code ships). The unlearn ascends
the user's batch only, never the memory. Cost: one more forward and backward per optimizer step; with
gradient accumulation one unlearn per optimizer step, on its first micro-batch (the later ones are not drawn yet)."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Method
from .der import DER, feed
from .trainer import one_row_batches


def trainable(model) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def fisher(trainer, params: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    """Mean over n memory rows (one at a time, dropout off) of p · (∇ log p)², log p the row's mean response-token
    log-probability, for each trainable tensor of the (still aligned) model."""
    model = trainer.model
    if trainer.memory is None:
        raise RuntimeError("refresh's Fisher needs the safety memory, and none was given (fisher_samples=0: F = 0)")
    f = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    with one_row_batches(trainer, n) as batches:
        for batch in batches:
            log_p = -model(**feed(batch), labels=batch["labels"]).loss
            grads = torch.autograd.grad(log_p, params, allow_unused=True)
            weight = log_p.detach().float().exp()
            for fi, g in zip(f, grads):
                if g is not None:
                    fi += weight * g.float().pow(2) / len(batches)
    return f


class Refresh(DER):
    def __init__(self, name: str = "refresh", unlearn_lr: float = 1e-5, noise: float = 1e-3,
                 fisher_damping: float = 1e-3, fisher_samples: int = 64, alpha: float = 0.0, beta: float = 0.0):
        if min(unlearn_lr, noise, fisher_damping, fisher_samples, alpha, beta) < 0:
            raise ConfigError("refresh hyperparameters must be >= 0")
        Method.__init__(self, name, unlearn_lr=unlearn_lr, noise=noise, fisher_damping=fisher_damping,
                        fisher_samples=fisher_samples, alpha=alpha, beta=beta)
        self._params = self._fisher = self._noise = self._step = None

    @property
    def needs_memory(self) -> bool:  # for the Fisher, and DER's terms
        return bool(self.fisher_samples or self.alpha or self.beta)

    memory_batches = needs_memory

    @property
    def needs_reference(self) -> bool:  # DER's logit term only
        return bool(self.alpha)

    def setup(self, trainer):
        self._params = trainable(trainer.model)
        self._fisher = (fisher(trainer, self._params, self.fisher_samples) if self.fisher_samples
                        else [torch.zeros_like(p, dtype=torch.float32) for p in self._params])
        self._noise, self._step = {}, None

    def teardown(self):
        self._params = self._fisher = self._noise = self._step = None

    def draw_noise(self, p: torch.Tensor, seed: int) -> torch.Tensor:
        """ξ for tensor p: float32, from one generator per device seeded with the run's seed (the global RNG, which
        dropout and data order draw from, is left alone)."""
        if p.device not in self._noise:
            self._noise[p.device] = torch.Generator(device=p.device).manual_seed(seed)
        return torch.randn(p.shape, generator=self._noise[p.device], device=p.device, dtype=torch.float32)

    def batch(self, trainer, inputs):
        if trainer.state.global_step != self._step:  # the optimizer step's first micro-batch
            self._step = trainer.state.global_step
            self.unlearn(trainer, inputs)
        return inputs  # relearned by the usual step, from the unlearned weights

    def unlearn(self, trainer, inputs) -> None:
        model = trainer.model
        model.train()
        with trainer.compute_loss_context_manager():
            loss = model(**feed(inputs), labels=inputs["labels"]).loss
        grads = torch.autograd.grad(loss, self._params, allow_unused=True)
        sizes = []
        with torch.no_grad():
            for p, g, f in zip(self._params, grads, self._fisher):
                g = torch.zeros_like(f) if g is None else g.float()
                ascent = p.float().norm() * g / (g.norm() + 1e-20)
                step = self.unlearn_lr * (ascent + self.noise * self.draw_noise(p, trainer.args.seed))
                step /= 1 + self.fisher_damping * f
                p.add_(step.to(p.dtype))
                sizes.append(step.pow(2).sum().to(sizes[0].device if sizes else step.device))
        trainer._metrics["train"]["method/unlearn_norm"].append(torch.stack(sizes).sum().sqrt().item())
