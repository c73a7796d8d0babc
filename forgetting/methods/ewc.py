"""Pull toward the aligned weights. EWC (Kirkpatrick et al., 2017): lambda/2 · Σ F · Δθ², F the diagonal
(empirical) Fisher of the aligned model on the safety memory; L2: lambda · Σ Δθ².
Under LoRA, θ is each adapted layer's merged weight, so Δθ = scaling · B·A (the layer's effective change),
and F is the Fisher of that base weight; for a full fine-tune, θ is every trainable parameter.
F is the mean over memory examples of the squared gradient of each example's sequence log-likelihood (the sum of
its response tokens' log-probs, as in the paper: a token mean would weigh an example by 1/T²).
F is normalised to mean 1, so lambda multiplies F / mean(F): it sits on the same scale for EWC and L2, and across
model sizes. The paper's lambda (on the raw F) is lambda / mean(F); mean(F) is reported as method/fisher_mean_raw."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Method
from .trainer import is_peft, one_row_batches


def named_lora_layers(model) -> dict:
    """{module name: LoRA layer} for the layers with an active adapter."""
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer) and m.active_adapters}


def lora_layers(model) -> list:
    return list(named_lora_layers(model).values())


def lora_delta(layer) -> torch.Tensor:
    a = layer.active_adapters[0]
    return layer.scaling[a] * (layer.lora_B[a].weight @ layer.lora_A[a].weight)


class Anchor:
    """The parameters being pulled back, and their change from the aligned model."""

    def __init__(self, model):
        self.peft = is_peft(model)
        if self.peft:
            self.layers = lora_layers(model)
            self.targets = [layer.base_layer.weight for layer in self.layers]
            self.start = None
        else:
            self.targets = [p for p in model.parameters() if p.requires_grad]
            self.start = [p.detach().clone() for p in self.targets]

    def deltas(self) -> list[torch.Tensor]:
        if self.peft:
            return [lora_delta(layer) for layer in self.layers]
        return [p - p0 for p, p0 in zip(self.targets, self.start)]


def fisher(trainer, anchor: Anchor, n: int) -> list[torch.Tensor]:
    """Mean over n memory examples (batch of one) of the squared gradient of each target of the example's
    sequence log-likelihood, aligned model; raw (not normalised)."""
    model = trainer.model
    if any(not torch.is_floating_point(w) for w in anchor.targets):
        raise ConfigError("ewc needs floating-point base weights (a 4-bit base has none): use method=l2, or "
                          "model.load_in_4bit=false")
    frozen = [w for w in anchor.targets if not w.requires_grad]
    for w in frozen:
        w.requires_grad_(True)
    f = [torch.zeros_like(w, dtype=torch.float32) for w in anchor.targets]
    try:
        with one_row_batches(trainer, n) as batches:
            for batch in batches:
                ctx = model.disable_adapter() if anchor.peft else torch.enable_grad()
                with ctx:
                    tokens = (batch["labels"][:, 1:] != -100).sum()  # the loss is their mean: times this, their sum
                    nll = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss * tokens
                    grads = torch.autograd.grad(nll, anchor.targets, allow_unused=True)
                for fi, g in zip(f, grads):
                    if g is not None:
                        fi += g.float().pow(2) / len(batches)
    finally:
        for w in frozen:
            w.requires_grad_(False)
            w.grad = None
    return f


class L2(Method):
    def __init__(self, name: str = "l2", lam: float = 1.0):
        super().__init__(name, lam=lam)
        self._anchor = None

    def setup(self, trainer):
        self._anchor = Anchor(trainer.model)

    def teardown(self):
        self._anchor = None

    def penalty(self) -> torch.Tensor:
        return sum(d.float().pow(2).sum() for d in self._anchor.deltas())

    def loss(self, trainer, model, inputs):
        return {f"{self.name}_penalty": self.lam * self.penalty()}


class EWC(L2):
    needs_memory = True
    memory_batches = True
    needs_float_base = True  # the Fisher of the base weights

    def __init__(self, name: str = "ewc", lam: float = 1.0, fisher_samples: int = 64):
        Method.__init__(self, name, lam=lam, fisher_samples=fisher_samples)
        self._anchor = self._fisher = None
        self._fisher_mean_raw = None

    def setup(self, trainer):
        super().setup(trainer)
        raw = fisher(trainer, self._anchor, self.fisher_samples)
        self._fisher_mean_raw = torch.cat([x.reshape(-1) for x in raw]).mean().item()
        self._fisher = [x / max(self._fisher_mean_raw, 1e-30) for x in raw]

    def teardown(self):
        self._anchor = self._fisher = None

    def metrics(self) -> dict:
        """Into metrics.json: the Fisher's raw mean (lam / it is the paper's lambda, on the raw Fisher)."""
        return {} if self._fisher_mean_raw is None else {"method/fisher_mean_raw": self._fisher_mean_raw}

    def penalty(self) -> torch.Tensor:
        return 0.5 * sum((f * d.float().pow(2)).sum() for f, d in zip(self._fisher, self._anchor.deltas()))
