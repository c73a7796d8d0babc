"""Dark Experience Replay (Buzzega et al., 2020): keep the aligned model's logits on memory examples.
DER: alpha · MSE(logits, aligned logits) on the memory responses; DER++ adds beta · CE on them, on a second memory
batch drawn for that term (as the paper and mammoth draw two buffer batches), so one more forward a step.
The aligned logits come from the same model with the adapter disabled, computed per memory batch:
exact, no storage (mammoth stores them at insertion time; here insertion time is the aligned model).
Both are computed at the response positions only (response_logits), and DER++'s label term goes through the
trainer's LM-head loss (trainer.lm_loss: TRL's fused head where the task loss uses it): at Llama 3's 128k vocabulary
the full (batch x length x vocab) logits of a memory batch were the largest tensors of a step (docs/rehearsal.md)."""
from __future__ import annotations

import torch

from .base import Method
from .trainer import backbone


def response_positions(labels: torch.Tensor) -> torch.Tensor:
    """Mask over logits[:, :-1]: positions whose next token is a response token."""
    return labels[:, 1:] != -100


def feed(batch: dict) -> dict:
    return {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")}


def response_logits(model, batch: dict) -> torch.Tensor:
    """(n, vocab): the logits at the n positions whose next token is a response token (response_positions), the
    LM head applied to those hidden states only; equal to model(...).logits[:, :-1][mask]. The full logits are
    (batch x length x vocab): at 128,256 tokens a memory batch of 8 x 360 tokens is 0.7 GB per copy in bf16, most of
    it prompt and padding positions. Models whose forward transforms the head's output (logit soft-capping or
    scaling) take the full forward."""
    mask = response_positions(batch["labels"])
    cfg = model.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return model(**feed(batch)).logits[:, :-1][mask]
    hidden = backbone(model)(**feed(batch)).last_hidden_state
    return model.get_output_embeddings()(hidden[:, :-1][mask])


class DER(Method):
    needs_memory = True
    memory_batches = True
    needs_reference = True

    def __init__(self, name: str = "der", alpha: float = 0.3, beta: float = 0.0):
        super().__init__(name, alpha=alpha, beta=beta)

    def loss(self, trainer, model, inputs):
        terms = {}
        if self.alpha:
            mb = trainer.memory_batch()
            logits = response_logits(model, mb)
            with trainer.reference() as ref_model:
                ref = response_logits(ref_model, mb)
            terms["der_mse"] = self.alpha * (logits.float() - ref.float()).pow(2).mean()
        if self.beta:
            mb = trainer.memory_batch()  # DER++: its own batch, independent of the logit term's
            terms["der_ce"] = self.beta * trainer.lm_loss(model, mb)
        return terms


class DERpp(DER):
    def __init__(self, name: str = "derpp", alpha: float = 0.1, beta: float = 0.5):
        super().__init__(name, alpha=alpha, beta=beta)
