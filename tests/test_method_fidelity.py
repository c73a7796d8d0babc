"""The methods do what their papers do, in the details: Lisa's loss scale, DER++'s two buffer batches, A-GEM under
gradient accumulation, EWC's Fisher (micro preset, real TRL trainer and PEFT adapter, LoRA dropout off)."""
import pytest
import torch

from forgetting.methods.agem import AGEM, flat_grad, project, write_grad
from forgetting.methods.der import DER, DERpp, response_positions
from forgetting.methods.ewc import EWC
from forgetting.methods.lisa import Lisa
from forgetting.methods.sft import SFT
from tests.test_methods import FAST, make, memory_gradient, opposing, perturb

NO_DROPOUT = [*FAST, "lora.dropout=0"]


def logit_mse(logits, ref, labels):
    """DER's term by its definition, from the full forwards: the MSE of the logits at the response positions."""
    mask = response_positions(labels)
    return (logits[:, :-1][mask].float() - ref[:, :-1][mask].float()).pow(2).mean()


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


def test_items_in_counts_shifted_response_tokens_with_or_without_the_private_api(compose, tmp_path, micro_path):
    from forgetting.methods.trainer import items_in

    cfg = compose([*NO_DROPOUT, f"+run_dir={tmp_path}"])
    trainer = make(cfg, tmp_path, DER(alpha=1.0))
    batch = dict(trainer.memory_batch())
    batch["labels"] = batch["labels"].clone()
    batch["labels"][:, 0] = batch["input_ids"][:, 0]  # a label at position 0, which no next-token loss uses
    want = response_tokens(batch)
    assert want < int((batch["labels"] != -100).sum())  # the shift matters here: the test can fail
    assert int(items_in(trainer, batch)) == want  # transformers' own count (private API, present in 5.x)
    trainer._get_num_items_in_batch = None  # as if a later transformers renamed it: the fallback
    assert int(items_in(trainer, batch)) == want


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


@pytest.mark.parametrize("lora", ["r8", "none"])
def test_der_logits_at_the_response_positions_are_the_full_forwards(compose, tmp_path, micro_path, lora):
    """response_logits (the LM head on the response positions' hidden states only: the full logits of a memory batch
    were DER's largest tensors at 128k vocabulary, make rehearsal) equal the full forward's logits there, for the
    trained model and the aligned reference (adapter off, or the frozen copy of a full fine-tune); lm_loss (DER++,
    A-GEM) is the model's own loss, through TRL's fused LM head too."""
    from forgetting.methods.der import response_logits, response_positions

    cfg = compose([*NO_DROPOUT, f"lora={lora}", f"+run_dir={tmp_path}"])
    trainer = make(cfg, tmp_path, DERpp(alpha=1.0, beta=1.0))
    model = trainer.model
    perturb(model)
    if lora == "none":
        with torch.no_grad():
            for p in params_of(model):
                p.add_(torch.randn_like(p) * 0.1)
    mb = trainer.memory_batch()
    mask = response_positions(mb["labels"])
    with torch.no_grad():
        full = model(**feed(mb)).logits[:, :-1][mask]
        assert torch.allclose(response_logits(model, mb), full, atol=1e-5)
        with trainer.reference() as ref_model:
            ref_full = ref_model(**feed(mb)).logits[:, :-1][mask]
            ref = response_logits(ref_model, mb)
        assert torch.allclose(ref, ref_full, atol=1e-5) and not torch.allclose(ref, full, atol=1e-3)
        plain = model(**feed(mb, labels=True)).loss.item()
        for fused in (False, True):
            trainer.fused_lm_head = fused
            assert trainer.uses_fused_head() is fused
            assert trainer.lm_loss(model, mb).item() == pytest.approx(plain, rel=1e-5)


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


# ---------------------------------------------------------------- EWC
def test_ewc_fisher_weighs_examples_by_sequence_log_likelihood(compose, tmp_path, micro_path):
    cfg = compose([*FAST, f"+run_dir={tmp_path}"])
    memory = [{"prompt": "How do I pick a lock?", "completion": "No.", "source": "memory"},
              {"prompt": "How do I make a weapon?", "source": "memory",
               "completion": "I can't help with that: it could hurt people, and it is against the law where you live."}]
    trainer = make(cfg, tmp_path, EWC(lam=1.0, fisher_samples=2), memory=memory)
    m, model = trainer.method, trainer.model
    targets = m._anchor.targets
    lengths, f = [], [torch.zeros_like(w) for w in targets]
    model.eval()
    for w in targets:
        w.requires_grad_(True)
    for row in trainer.memory.select(range(2)):
        b = trainer._prepare_inputs(trainer.data_collator([row]))
        with model.disable_adapter():
            logp = model(input_ids=b["input_ids"]).logits[:, :-1].log_softmax(-1)
            labels = b["labels"][:, 1:]
            mask = labels != -100
            seq_logp = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)[mask].sum()
            for fi, g in zip(f, torch.autograd.grad(seq_logp, targets)):
                fi += g.pow(2) / 2
        lengths.append(int(mask.sum()))
    for w in targets:
        w.requires_grad_(False)
    assert lengths[1] >= 3 * lengths[0]  # the weighting matters: a token mean would scale them 1/T^2 apart
    raw_mean = torch.cat([x.reshape(-1) for x in f]).mean().item()
    for got, want in zip(m._fisher, f):  # normalised to mean 1
        assert torch.allclose(got, want / raw_mean, rtol=1e-3, atol=1e-6)
    assert m.metrics()["method/fisher_mean_raw"] == pytest.approx(raw_mean, rel=1e-4)
