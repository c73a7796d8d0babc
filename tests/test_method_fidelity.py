"""The methods do what their papers do, in the details (micro preset, real TRL trainer and PEFT adapter)."""
import pytest
import torch

from forgetting.methods.lisa import Lisa
from tests.test_methods import FAST, make

NO_DROPOUT = [*FAST, "lora.dropout=0"]


def response_tokens(batch) -> int:
    return int((batch["labels"][:, 1:] != -100).sum())


def feed(batch, labels=False) -> dict:
    out = {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")}
    return {**out, "labels": batch["labels"]} if labels else out


# ---------------------------------------------------------------- Lisa
def test_lisa_alignment_step_trains_on_the_memory_batch_mean(compose, tmp_path, micro_path):
    cfg = compose([*NO_DROPOUT, "optimizer.grad_accum=2", f"+run_dir={tmp_path}"])
    trainer = make(cfg, tmp_path, Lisa(align_steps=1, user_steps=1, rho=0.0))
    model = trainer.model
    fixed = trainer.memory_batch()
    trainer.memory_batch = lambda: fixed
    batches, n_items = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 2, trainer.args.device)
    trainer.current_gradient_accumulation_steps = len(batches)  # set by the train loop, stepped here by hand
    assert n_items is not None and len(batches) == 2
    assert int(n_items) != 2 * response_tokens(fixed)  # user and memory token counts differ: the test can fail
    with torch.no_grad():
        memory_mean = model(**feed(fixed, labels=True)).loss.item()
        user_sum = model(**feed(batches[0], labels=True)).loss.item() * response_tokens(batches[0])
    trainer.state.global_step = 0  # alignment: the memory batch's own token mean, over the accumulation steps
    assert trainer.training_step(model, batches[0], n_items).item() == pytest.approx(memory_mean / 2, rel=1e-4)
    trainer.state.global_step = 1  # user: the task loss as transformers weighs it, over all the step's tokens
    assert trainer.training_step(model, batches[0], n_items).item() == pytest.approx(user_sum / int(n_items), rel=1e-4)
