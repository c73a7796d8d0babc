"""The methods do what their papers do, in the details (micro preset, real TRL trainer and PEFT adapter)."""
import pytest
import torch

from forgetting.methods.agem import AGEM, flat_grad, project, write_grad
from forgetting.methods.der import DER, DERpp, logit_mse
from forgetting.methods.lisa import Lisa
from forgetting.methods.sft import SFT
from tests.test_methods import FAST, make, memory_gradient, opposing, perturb

NO_DROPOUT = [*FAST, "lora.dropout=0"]


def spy_memory(trainer) -> list[dict]:
    """Records every memory batch the method draws (the trainer's own batches)."""
    drawn, draw = [], trainer.memory_batch
    trainer.memory_batch = lambda: drawn.append(draw()) or drawn[-1]
    return drawn


def response_tokens(batch) -> int:
    return int((batch["labels"][:, 1:] != -100).sum())


def feed(batch, labels=False) -> dict:
    out = {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")}
    return {**out, "labels": batch["labels"]} if labels else out


def params_of(model) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


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


# ---------------------------------------------------------------- DER / DER++
def test_derpp_draws_a_second_memory_batch_for_the_label_term(compose, tmp_path, micro_path):
    cfg = compose([*NO_DROPOUT, f"+run_dir={tmp_path}"])
    trainer = make(cfg, tmp_path, DERpp(alpha=1.0, beta=1.0))
    model = trainer.model
    perturb(model)
    drawn = spy_memory(trainer)
    terms = trainer.method.loss(trainer, model, {})
    assert len(drawn) == 2
    decode = trainer.processing_class.batch_decode
    assert not set(decode(drawn[0]["input_ids"])) & set(decode(drawn[1]["input_ids"]))  # 8 rows, batches of 4
    with torch.no_grad():
        with trainer.reference() as ref_model:
            ref = ref_model(**feed(drawn[0])).logits
        mse = logit_mse(model(**feed(drawn[0])).logits, ref, drawn[0]["labels"])
        ce = model(**feed(drawn[1], labels=True)).loss
    assert terms["der_mse"].item() == pytest.approx(mse.item(), rel=1e-4) and mse.item() > 0
    assert terms["der_ce"].item() == pytest.approx(ce.item(), rel=1e-4)
    drawn.clear()
    trainer.method = DER(alpha=1.0)  # DER (beta 0): one batch
    assert set(trainer.method.loss(trainer, model, {})) == {"der_mse"} and len(drawn) == 1


# ---------------------------------------------------------------- A-GEM
def test_agem_projects_the_accumulated_gradient_once_per_optimizer_step(compose, tmp_path, micro_path):
    cfg = compose([*NO_DROPOUT, "optimizer.grad_accum=2", f"+run_dir={tmp_path}"])
    trainer = make(cfg, tmp_path, AGEM())
    model, params, agem = trainer.model, params_of(trainer.model), trainer.method
    perturb(model)
    batches, n_items = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 2, trainer.args.device)
    trainer.current_gradient_accumulation_steps = len(batches)  # set by the train loop, stepped here by hand

    def micro_step(i: int) -> torch.Tensor:  # the train loop's sync flag: the last micro-batch ends the step
        trainer.accelerator.gradient_state._set_sync_gradients(i == len(batches) - 1)
        trainer.training_step(model, batches[i], n_items)
        return flat_grad(params).clone()

    trainer.method = SFT()  # the plain gradients: of micro-batch 1 alone, and accumulated over both
    model.zero_grad()
    first, task = micro_step(0), micro_step(1)
    trainer.method = agem
    fixed = trainer.memory_batch()
    g_ref = memory_gradient(model, fixed)
    drawn = []
    trainer.memory_batch = lambda: drawn.append(fixed) or fixed
    # a start that outweighs the task gradient and opposes the memory's: the accumulated gradient conflicts
    strong = opposing(g_ref) * 2 * (task.norm() + g_ref.norm()) / g_ref.norm()
    for start in (torch.zeros_like(task), strong):
        drawn.clear()
        write_grad(params, start)  # as if left by micro-batches earlier in the step
        assert torch.allclose(micro_step(0) - start, first, rtol=1e-4, atol=1e-5 * first.norm().item())
        assert not drawn  # nothing drawn, nothing projected before the step's last micro-batch
        got = micro_step(1)
        assert len(drawn) == 1  # one reference gradient per optimizer step
        want, hit = project(start + task, g_ref)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * want.norm().item())
        assert torch.dot(got, g_ref).item() >= -1e-5 * got.norm().item() * g_ref.norm().item()
    assert hit and agem.steps == 2 and agem.projected >= 1  # the opposing start forces a projection
