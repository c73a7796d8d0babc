"""SafeLoRA (Hsu et al., 2024, "Safe LoRA: the silver lining of reducing safety risks when finetuning LLMs"):
after training, each LoRA layer's update ΔW = scaling·B·A is compared with its projection C·ΔW onto the
alignment subspace of V = W_aligned − W_unaligned; layers whose cosine similarity is at or below the
threshold (or the `top_frac` least similar) are replaced by the projection, B ← C·B (exact: C·B·A = C·ΔW).
  projection: paper     C = V·Vᵀ / ‖V‖_F, as in the paper and its code (not idempotent: C² ≠ C)
              subspace  C = U_k·U_kᵀ, the orthogonal projector onto V's top `rank_frac` left singular
                        vectors (idempotent)
Written here: PEFT ships no SafeLoRA (only an example script), and it needs our unaligned-weights loader."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Method
from .ewc import lora_delta, named_lora_layers
from .trainer import is_peft

PROJECTIONS = ("paper", "subspace")


def projector(v: torch.Tensor, kind: str = "paper", rank_frac: float = 0.1) -> torch.Tensor:
    """The (out × out) matrix C that projects a weight update onto V's column space."""
    v = v.float()
    if kind == "paper":
        return v @ v.T / torch.linalg.norm(v).clamp_min(1e-12)
    u, s, _ = torch.linalg.svd(v, full_matrices=False)
    k = max(1, round(rank_frac * len(s)))
    return u[:, :k] @ u[:, :k].T


def similarity(delta: torch.Tensor, c: torch.Tensor) -> float:
    """Cosine similarity between the update and its projection (1: already in the subspace)."""
    return torch.nn.functional.cosine_similarity(delta.reshape(1, -1).float(), (c @ delta.float()).reshape(1, -1)).item()


def base_weight_name(module_name: str) -> str:
    """PEFT module name → the plain model's parameter name (base_model.model.X → X.weight)."""
    prefix = "base_model.model."
    return (module_name[len(prefix):] if module_name.startswith(prefix) else module_name) + ".weight"


class SafeLoRA(Method):
    post_hoc = True  # trains exactly as sft: an identical sft training is reused (reuse.py)
    needs_unaligned = True
    needs_float_base = True  # projects with the base weights

    def __init__(self, name: str = "safelora", threshold: float = 0.5, top_frac: float | None = None,
                 projection: str = "paper", rank_frac: float = 0.1):
        if projection not in PROJECTIONS:
            raise ConfigError(f"safelora projection must be one of {', '.join(PROJECTIONS)}, not {projection!r}")
        if top_frac is not None and not 0 <= top_frac <= 1:
            raise ConfigError(f"safelora top_frac must lie in [0, 1], got {top_frac}")
        if not 0 < rank_frac <= 1:
            raise ConfigError(f"safelora rank_frac must lie in (0, 1], got {rank_frac}")
        super().__init__(name, threshold=threshold, top_frac=top_frac, projection=projection, rank_frac=rank_frac)
        self.report: dict = {}

    def setup(self, trainer):
        if not is_peft(trainer.model):
            raise ConfigError("safelora projects LoRA updates: it needs a LoRA adapter (not lora=none)")

    def project(self, model, unaligned: dict[str, torch.Tensor]) -> dict:
        """Project the layers that qualify, in place; → {layer: similarity}, {projected layers}."""
        layers = named_lora_layers(model)
        sims, cs = {}, {}
        for n, layer in layers.items():
            w = layer.base_layer.weight
            if not torch.is_floating_point(w):
                raise ConfigError("safelora needs floating-point base weights (a 4-bit base has none): "
                                  "model.load_in_4bit=false")
            v = w.detach().float() - unaligned[base_weight_name(n)].to(w.device).float()
            cs[n] = projector(v, self.projection, self.rank_frac)
            sims[n] = similarity(lora_delta(layer).detach(), cs[n])
        if self.top_frac is not None:
            chosen = sorted(sims, key=sims.get)[: round(self.top_frac * len(sims))]
        else:
            chosen = [n for n, s in sims.items() if s <= self.threshold]
        with torch.no_grad():
            for n in chosen:
                layer = layers[n]
                for a in layer.active_adapters:
                    b = layer.lora_B[a].weight
                    b.copy_((cs[n] @ b.float()).to(b.dtype))
        return {"similarity": {n: round(s, 4) for n, s in sims.items()}, "projected": sorted(chosen)}

    def after_training(self, model):
        names = {base_weight_name(n) for n in named_lora_layers(model)}
        unaligned = self.unaligned_weights(names)
        missing = names - set(unaligned)
        if missing:
            raise ConfigError(f"the unaligned model lacks {len(missing)} weights of the aligned one "
                              f"(e.g. {sorted(missing)[0]}): is model.unaligned the same architecture?")
        self.report = self.project(model, unaligned)
        n, total = len(self.report["projected"]), len(self.report["similarity"])
        print(f"[safelora] projected {n} of {total} LoRA layers onto the alignment subspace", flush=True)
        return model

    def metrics(self) -> dict:
        """Into metrics.json: how many layers were projected, and the similarity range."""
        if not self.report:
            return {}
        sims = list(self.report["similarity"].values())
        return {"method/projected_layers": len(self.report["projected"]), "method/layers": len(sims),
                "method/similarity_min": min(sims), "method/similarity_max": max(sims)}
