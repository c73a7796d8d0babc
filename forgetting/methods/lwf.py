"""Learning without Forgetting, LLM form: beta · MSE between the model's last hidden states and the
aligned model's on the user's own batch (attention-masked tokens). The model's hidden states are
captured by a hook on the decoder during the task forward, so the only extra cost is the reference forward."""
from __future__ import annotations

import torch

from .base import Method
from .trainer import backbone


class LwF(Method):
    needs_reference = True

    def __init__(self, name: str = "lwf", beta: float = 1.0):
        super().__init__(name, beta=beta)
        self._hidden = self._hook = None

    def setup(self, trainer):
        def keep(module, args, output):
            self._hidden = output.last_hidden_state

        self._hook = backbone(trainer.model).register_forward_hook(keep)

    def teardown(self):
        if self._hook is not None:
            self._hook.remove()
        self._hidden = self._hook = None

    def loss(self, trainer, model, inputs):
        h = self._hidden  # from the task forward that just ran
        feed = {"input_ids": inputs["input_ids"], "attention_mask": inputs.get("attention_mask")}
        with trainer.reference() as ref_model:
            ref = backbone(ref_model)(**feed).last_hidden_state
        mask = feed["attention_mask"].bool() if feed["attention_mask"] is not None else torch.ones_like(ref[..., 0]).bool()
        return {"lwf_mse": self.beta * (h[mask].float() - ref[mask].float()).pow(2).mean()}
