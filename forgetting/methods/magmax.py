"""MagMax (Marczak et al., 2024, "MagMax: leveraging model merging for seamless continual learning"): the
merged model is θ_unaligned + λ·maxmag(τ_align, τ_user), where τ_align = θ_aligned − θ_unaligned, τ_user the
fine-tune's change and maxmag picks, per parameter entry, whichever has the larger magnitude. With τ_user = 0
and λ = 1 it is the aligned model; with one task vector zero it is task arithmetic on the other.
Under LoRA the merged weight is written into the base layer minus the adapter's delta, so base + adapter
is the merged model and the saved adapter stays the plain fine-tune (the merge is a function of the
unaligned model, the aligned model, the adapter and λ). Every parameter is merged, not only the adapted ones.
Written here: PEFT's merge_utils has task arithmetic, TIES and DARE, but no max-magnitude selection."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Method
from .ewc import lora_delta, named_lora_layers
from .safelora import base_weight_name
from .trainer import is_peft


def maxmag(*vectors: torch.Tensor) -> torch.Tensor:
    """Per entry, the value of largest magnitude among the task vectors (ties: the first)."""
    stack = torch.stack([v.float() for v in vectors])
    idx = stack.abs().argmax(dim=0, keepdim=True)
    return stack.gather(0, idx).squeeze(0)


class MagMax(Method):
    post_hoc = True  # trains exactly as sft: an identical sft training is reused (reuse.py)
    needs_unaligned = True
    modifies_base = True

    def __init__(self, name: str = "magmax", lam: float = 1.0):
        if lam < 0:
            raise ConfigError(f"magmax lam must be >= 0, got {lam}")
        super().__init__(name, lam=lam)
        self._start = None
        self.report: dict = {}

    def setup(self, trainer):
        if not is_peft(trainer.model):  # a full fine-tune: τ_user needs the weights before training
            self._start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    def after_training(self, model):
        peft = is_peft(model)
        lm = model.get_base_model() if peft else model
        params = dict(lm.named_parameters())
        deltas = {}
        if peft:
            for n, layer in named_lora_layers(model).items():
                deltas[base_weight_name(n).replace(".weight", ".base_layer.weight")] = lora_delta(layer).detach()
        unaligned = self.unaligned_weights({self.plain(n) for n in params})
        picked = total = 0
        with torch.no_grad():
            for n, p in params.items():
                if "lora_" in n or self.plain(n) not in unaligned:
                    continue  # adapter weights; tied or absent weights (e.g. lm_head tied to the embeddings)
                if not torch.is_floating_point(p):
                    raise ConfigError("magmax needs floating-point base weights (a 4-bit base has none): "
                                      "model.load_in_4bit=false")
                u = unaligned[self.plain(n)].to(p.device).float()
                if peft:
                    aligned, user = p.float(), deltas.get(n)
                else:
                    aligned = self._start[n].float()
                    user = p.float() - aligned
                tau_a = aligned - u
                merged = u + self.lam * (maxmag(tau_a, user) if user is not None else tau_a)
                if user is not None:
                    picked += int((user.abs() > tau_a.abs()).sum())
                    total += user.numel()
                p.copy_((merged - user if peft and user is not None else merged).to(p.dtype))
        self._start = None
        self.report = {"method/user_share": picked / total if total else 0.0}
        return model

    @staticmethod
    def plain(name: str) -> str:
        """A PEFT parameter name → the plain model's (…q_proj.base_layer.weight → …q_proj.weight)."""
        return name.replace(".base_layer.", ".")

    def metrics(self) -> dict:
        return dict(self.report)
