"""The method plug-in: hooks that do nothing by default (mammoth's begin_task / observe / end_task,
TRL's compute_loss), called by trainer.MethodTrainer."""
from __future__ import annotations

import torch


class Method:
    needs_memory = False    # True: the run builds (or loads) the safety memory and hands it over
    memory_batches = False  # True: draws tokenized memory batches (trainer.memory / memory_batch)
    needs_reference = False  # True: uses the aligned model (adapter disabled, or a frozen copy)
    modifies_base = False   # True: the base weights change, so a worker must not reuse the loaded base
    post_hoc = False        # True: acts only after training (hooks no-ops while training): training is sft's
    needs_unaligned = False  # True: reads the unaligned model's weights (self.unaligned_weights(names))
    needs_float_base = False  # True: reads or rewrites the base weights, so a 4-bit base (model.load_in_4bit) is refused

    def __init__(self, name: str = "sft", **hparams):
        self.name = name
        for k, v in hparams.items():
            setattr(self, k, v)

    def train_rows(self, rows: list[dict], memory: list[dict], seed: int) -> list[dict]:
        """The data mix: the rows the trainer iterates over."""
        return rows

    def setup(self, trainer) -> None:
        """Before the first step (the model is still the aligned one)."""

    def batch(self, trainer, inputs: dict) -> dict:
        """The batch this step trains on (e.g. a memory batch instead of the user's; refresh unlearns it first). A
        batch returned in place of the user's is weighted as its own token mean (over the gradient accumulation
        steps), like a user batch."""
        return inputs

    def loss(self, trainer, model, inputs: dict) -> dict[str, torch.Tensor]:
        """Extra loss terms for this batch, by name; each is added to the task loss and logged."""
        return {}

    def after_backward(self, trainer, model) -> None:
        """After the task gradient of a micro-batch exists, before the optimizer step (the last micro-batch of an
        optimizer step: trainer.accelerator.sync_gradients)."""

    def teardown(self) -> None:
        """After training, also when it failed: remove hooks, free what setup made."""

    def after_training(self, model):
        """After the last step; returns the model to evaluate (e.g. merged weights)."""
        return model

    def metrics(self) -> dict:
        """Numbers the method reports about itself after training (into metrics.json), e.g. layers projected."""
        return {}

    def __repr__(self) -> str:
        hp = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "name"}
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in hp.items())})"
