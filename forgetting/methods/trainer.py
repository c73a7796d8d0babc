"""TRL's SFTTrainer with a method's hooks (the GKDTrainer pattern: only compute_loss and the step change).
The aligned reference is the same model with its LoRA adapter disabled (TRL DPO's null_ref_context); for a
full fine-tune, a frozen copy taken before the first step."""
from __future__ import annotations

import copy
import functools
import itertools
from contextlib import contextmanager

import torch
from transformers import Trainer
from trl import SFTTrainer

from .base import Method


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def items_in(trainer: Trainer, batch: dict):
    """The tokens `batch` contributes to the loss as transformers counts them (shifted labels != -100).
    transformers has no public API for it: its private `_get_num_items_in_batch` (5.x) is used while it exists,
    so a change in how it counts follows; without it, the same count by hand (tests/test_method_fidelity.py)."""
    count = getattr(trainer, "_get_num_items_in_batch", None)
    if count is not None:
        return count([batch], trainer.args.device)
    labels = batch["shift_labels"] if "shift_labels" in batch else batch["labels"][..., 1:]
    return labels.ne(-100).sum().to(trainer.args.device)


def backbone(model):
    """The decoder stack (LlamaModel) under a causal LM, PEFT-wrapped or not."""
    lm = model.get_base_model() if is_peft(model) else model
    return getattr(lm, lm.base_model_prefix)


@contextmanager
def one_row_batches(trainer: Trainer, n: int):
    """The first n rows of the safety memory, each a prepared batch of one, with the model in eval mode (dropout
    off) until the block ends: the per-example gradients of EWC's and Refresh's Fishers."""
    model = trainer.model
    ds = trainer.memory.select(range(min(n, len(trainer.memory))))
    was_training = model.training
    model.eval()
    try:
        yield [trainer._prepare_inputs(trainer.data_collator([row])) for row in ds]
    finally:
        model.train(was_training)


class MethodTrainer(SFTTrainer):
    fused_lm_head: bool | None = None  # None: TRL's fused LM head on cuda / xpu only (compute_loss); True forces it
    #                                    (benchmarks/rehearsal.py on CPU: a GPU's memory profile for the task loss)

    def __init__(self, *args, method: Method, memory_rows: list[dict] | None = None,
                 memory_batch_size: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.method = method
        self._frozen = None
        self._memory_iter = None
        self.memory = None
        if memory_rows and method.memory_batches:  # rows in TRL's conversational format (train.chat_rows)
            from datasets import Dataset

            ds = Dataset.from_list(memory_rows)
            ds = self._prepare_dataset(ds, self.processing_class, self.args, False, None, "memory")
            self.memory = ds.select_columns(["input_ids", "labels"])
        self.memory_batch_size = memory_batch_size or self.args.per_device_train_batch_size
        if method.needs_reference and not is_peft(self.model):
            self._frozen = copy.deepcopy(self.model).eval().requires_grad_(False)
            # TRL patched model.forward (fused LM head) with a closure over the live model: a copy would still
            # run the live weights, so the copy gets its class's own forward back
            self._frozen.__dict__.pop("forward", None)
        method.setup(self)

    # ------------------------------------------------------------ what the hooks use
    def memory_batch(self) -> dict:
        """The next memory batch (own seeded order, cycling), collated and on the model's device."""
        if self.memory is None:
            raise RuntimeError(f"method {self.method.name} needs the safety memory, and none was given")
        if self._memory_iter is None:
            g = torch.Generator().manual_seed(self.args.seed)
            loader = torch.utils.data.DataLoader(self.memory, batch_size=self.memory_batch_size, shuffle=True,
                                                 generator=g, collate_fn=self.data_collator)
            self._memory_iter = itertools.chain.from_iterable(itertools.repeat(loader))
        return self._prepare_inputs(next(self._memory_iter))

    def uses_fused_head(self) -> bool:
        """Whether losses go through TRL's fused LM head (chunked: never the (batch x length x vocab) logits)."""
        return self.fused_lm_head if self.fused_lm_head is not None else self.args.device.type in ("cuda", "xpu")

    def lm_loss(self, model, batch: dict) -> torch.Tensor:
        """The mean NLL of `batch`'s labels (a memory batch: DER++, A-GEM), the same way as the task loss: through
        TRL's fused LM head where compute_loss uses it, the model's own loss elsewhere (the same value)."""
        fused = {"fused_lm_head": True} if self.uses_fused_head() else {}
        return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=batch["labels"],
                     **fused).loss

    @contextmanager
    def reference(self):
        """Inside: `self.reference_model` computes the aligned model's outputs (no grad)."""
        with torch.no_grad():
            if self._frozen is not None:
                yield self._frozen
            else:
                with self.model.disable_adapter():
                    yield self.model

    # ------------------------------------------------------------ the hooks
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # TRL's fused LM head (chunked log-probs + entropy + top-1) has Triton kernels on cuda/xpu only; its torch
        # fallback took 56 % of a CPU training step (profiled). Elsewhere: the model's own loss, the same NLL
        # (identical losses measured) at x1.8 the speed, without TRL's entropy / token-accuracy train metrics.
        loss_fn = super().compute_loss if self.uses_fused_head() else functools.partial(Trainer.compute_loss, self)
        out = loss_fn(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if not self.model.training:
            return out
        loss, rest = (out[0], out[1:]) if return_outputs else (out, ())
        # like TRL's aux loss: with num_items_in_batch the task loss is already split over accumulation steps
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        for name, term in self.method.loss(self, model, inputs).items():
            loss = loss + term / steps
            self._metrics["train"][f"method/{name}"].append(float(term.detach()))
        return (loss, *rest) if return_outputs else loss

    def _get_train_sampler(self, train_dataset=None):
        from ..sampling import source_mixed_sampler  # poison / memory rows batched as random sampling would

        sampler = source_mixed_sampler(self)
        return sampler if sampler is not None else super()._get_train_sampler(train_dataset)

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            self.method.teardown()

    def training_step(self, model, inputs, num_items_in_batch=None):
        batch = self.method.batch(self, inputs)
        if batch is not inputs and num_items_in_batch is not None:
            # num_items_in_batch counts the user batches' tokens over the whole optimizer step: a batch put in place
            # of a user batch contributes its own token mean, over the accumulation steps like the task loss
            num_items_in_batch = items_in(self, batch) * self.current_gradient_accumulation_steps
        loss = super().training_step(model, batch, num_items_in_batch)
        self.method.after_backward(self, model)
        return loss
