"""Dark Experience Replay (Buzzega et al., 2020): keep the aligned model's logits on memory examples.
DER: alpha · MSE(logits, aligned logits) on the memory responses; DER++ adds beta · CE on them, on a second memory
batch drawn for that term (as the paper and mammoth draw two buffer batches), so one more forward a step.
The aligned logits come from the same model with the adapter disabled, computed per memory batch:
exact, no storage (mammoth stores them at insertion time; here insertion time is the aligned model)."""
from __future__ import annotations

import torch

from .base import Method


def response_positions(labels: torch.Tensor) -> torch.Tensor:
    """Mask over logits[:, :-1]: positions whose next token is a response token."""
    return labels[:, 1:] != -100


def logit_mse(logits: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    mask = response_positions(labels)
    return (logits[:, :-1][mask].float() - ref[:, :-1][mask].float()).pow(2).mean()


def feed(batch: dict) -> dict:
    return {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")}


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
            logits = model(**feed(mb)).logits
            with trainer.reference() as ref_model:
                ref = ref_model(**feed(mb)).logits
            terms["der_mse"] = self.alpha * logit_mse(logits, ref, mb["labels"])
        if self.beta:
            mb = trainer.memory_batch()  # DER++: its own batch, independent of the logit term's
            terms["der_ce"] = self.beta * model(**feed(mb), labels=mb["labels"]).loss
        return terms


class DERpp(DER):
    def __init__(self, name: str = "derpp", alpha: float = 0.1, beta: float = 0.5):
        super().__init__(name, alpha=alpha, beta=beta)
