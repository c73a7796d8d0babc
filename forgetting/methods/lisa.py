"""Lisa (Huang et al., 2024, "Lazy Safety Alignment"): bi-state optimisation. Training alternates
`align_steps` steps on the safety memory with `user_steps` steps on the user's data, and every step adds
rho/2 · ‖w − w_switch‖², a proximal pull toward the trainable weights at the last switch of state.
Here the step budget is the user data's: an alignment step trains on a memory batch in place of that
step's user batch (so 1:9 drops a tenth of the user batches), weighted as its own token mean (trainer.training_step),
not by the user batch's token count: refusals are far shorter than the user's answers."""
from __future__ import annotations

from .base import Method


class Lisa(Method):
    needs_memory = True
    memory_batches = True

    def __init__(self, name: str = "lisa", align_steps: int = 10, user_steps: int = 90, rho: float = 1.0):
        super().__init__(name, align_steps=align_steps, user_steps=user_steps, rho=rho)
        self._anchor = self._state = None

    def state_at(self, step: int) -> str:
        return "align" if step % (self.align_steps + self.user_steps) < self.align_steps else "user"

    def batch(self, trainer, inputs):
        state = self.state_at(trainer.state.global_step)
        if state != self._state:  # a switch: the proximal term now pulls toward these weights
            self._state = state
            self._anchor = [p.detach().clone() for p in trainer.model.parameters() if p.requires_grad]
        trainer._metrics["train"]["method/lisa_align"].append(float(state == "align"))
        return trainer.memory_batch() if state == "align" else inputs

    def loss(self, trainer, model, inputs):
        if self._anchor is None or not self.rho:
            return {}
        params = [p for p in trainer.model.parameters() if p.requires_grad]
        return {"lisa_prox": self.rho / 2 * sum((p - a).pow(2).sum() for p, a in zip(params, self._anchor))}

    def teardown(self):
        self._anchor = self._state = None
