"""MagMax (Marczak et al., 2024, "MagMax: leveraging model merging for seamless continual learning").
As in the paper every task vector is measured from the pre-trained (here: unaligned) weights θ_u:
τ_align = θ_aligned − θ_u and τ_user = θ_tuned − θ_u = τ_align + Δ (Δ: the fine-tune's change, the LoRA
delta or p − p_start). Per parameter entry the merge keeps the task vector of larger magnitude (ties:
τ_align) and λ scales it: θ = θ_u + λ·maxmag(τ_align, τ_user). λ = 1: every entry is the aligned or the
fine-tuned value (copied); λ = 0: the unaligned model. `method/user_share`: the share of trained entries
(LoRA: the adapted layers') where τ_user won. Every parameter is merged (untrained ones: θ_u + λ·τ_align).
Under LoRA the merged weight itself goes into the base layer and the adapter's scaling is set to 0 on the
in-memory model (a bf16 base holding merged − Δ would round at the scale of Δ); the saved adapter and the
reused training (reuse.py) stay the plain fine-tune: the merge is a function of θ_u, θ_aligned, that
adapter and λ. Written here: PEFT's merge_utils has task arithmetic, TIES and DARE, no max-magnitude."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Method
from .ewc import named_lora_layers
from .safelora import base_weight_name
from .trainer import is_peft


def magmax(unaligned: torch.Tensor, aligned: torch.Tensor, tuned: torch.Tensor, lam: float = 1.0):
    """(merged, user_won), float32: θ_u + λ·maxmag(τ_align, τ_user), written θ_pick − (1 − λ)·τ_pick so that
    λ = 1 copies the aligned or the fine-tuned entry exactly."""
    u, a, t = unaligned.float(), aligned.float(), tuned.float()
    tau_a, tau_u = a - u, t - u
    won = tau_u.abs() > tau_a.abs()
    return torch.where(won, t, a) - (1 - lam) * torch.where(won, tau_u, tau_a), won


# Entries merged at a time. At once, the 128256 x 2048 embedding of Llama 3.2 1B took ~6 GB of float32 temporaries
# (unaligned, aligned, tuned, both task vectors, their magnitudes: `make rehearsal`, +8.6 GB in the stage with the
# unaligned weights); a block of 2^24 entries takes ~0.4 GB.
CHUNK = 1 << 24


def row_blocks(p: torch.Tensor) -> list[slice]:
    """Slices of p's first dimension (whole rows) of about CHUNK entries each."""
    if p.dim() == 0:
        return [slice(None)]
    step = max(1, CHUNK // max(1, p[0].numel()))
    return [slice(i, i + step) for i in range(0, p.shape[0], step)]


def adapter_delta(layer) -> torch.Tensor:
    """The LoRA layer's weight change, float32: Σ over active adapters of scaling·B·A."""
    return sum(layer.scaling[a] * (layer.lora_B[a].weight.float() @ layer.lora_A[a].weight.float())
               for a in layer.active_adapters if a in layer.lora_A)


class MagMax(Method):
    post_hoc = True  # trains exactly as sft: an identical sft training is reused (reuse.py)
    needs_unaligned = True
    modifies_base = True
    needs_float_base = True  # merges the base weights

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
        layers = {}
        if peft:
            for n, layer in named_lora_layers(model).items():
                layers[base_weight_name(n).replace(".weight", ".base_layer.weight")] = layer
        unaligned = self.unaligned_weights({self.plain(n) for n in params})
        won = total = 0
        with torch.no_grad():
            for n, p in params.items():
                if "lora_" in n or self.plain(n) not in unaligned:
                    continue  # adapter weights; tied or absent weights (e.g. lm_head tied to the embeddings)
                if not torch.is_floating_point(p):
                    raise ConfigError("magmax needs floating-point base weights (a 4-bit base has none): "
                                      "model.load_in_4bit=false")
                delta = adapter_delta(layers[n]) if peft and n in layers else None
                base = unaligned[self.plain(n)]
                for rows in row_blocks(p):  # a block at a time: the float32 temporaries stay ~CHUNK entries each
                    u = base[rows].to(p.device)
                    if peft:
                        aligned = p[rows]
                        tuned = p[rows].float() + delta[rows] if delta is not None else p[rows]
                    else:
                        aligned, tuned = self._start[n][rows], p[rows]
                    merged, user = magmax(u, aligned, tuned, self.lam)
                    if not peft or n in layers:
                        won += int(user.sum())
                        total += user.numel()
                    p[rows] = merged.to(p.dtype)
            for layer in layers.values():  # the base now holds the merged weight: the adapter adds nothing
                for a in layer.active_adapters:
                    layer.set_scale(a, 0.0)
        self._start = None
        self.report = {"method/user_share": won / total if total else 0.0}
        return model

    @staticmethod
    def plain(name: str) -> str:
        """A PEFT parameter name → the plain model's (…q_proj.base_layer.weight → …q_proj.weight)."""
        return name.replace(".base_layer.", ".")

    def metrics(self) -> dict:
        return dict(self.report)
