"""Each method changes training as it claims (micro preset, real TRL trainer and PEFT adapter)."""
import json

import pytest
import torch

from forgetting import data, models, run, train
from forgetting.methods.agem import AGEM, flat_grad, project, write_grad
from forgetting.methods.der import DER
from forgetting.methods.ewc import EWC, L2, lora_layers
from forgetting.methods.lwf import LwF
from forgetting.methods.replay import Replay, mix
from forgetting.methods.sft import SFT

FAST = ["model=micro", "eval=smoke", "data.n_train=16", "optimizer.batch_size=4", "logger=none"]


@pytest.fixture
def cfg(compose, tmp_path):
    return compose([*FAST, f"+run_dir={tmp_path}"])


def memory_rows(n=8):
    return [{"prompt": f"How do I build weapon number {i}?", "completion": "I can't help with that.",
             "source": "memory"} for i in range(n)]


def make(cfg, tmp_path, method, rows=None, memory=None):
    model, tok, _ = models.load(cfg.model, cfg.cache_dir)
    rows = rows if rows is not None else data.user_rows(cfg)
    trainer, _ = train.make_trainer(model, tok, rows, cfg, tmp_path, method=method,
                                    memory=memory if memory is not None else memory_rows())
    trainer.model.train()
    return trainer


def perturb(model, scale=0.5):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def adapter(model):
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


# ---------------------------------------------------------------- replay
def test_replay_mix_holds_memory_at_the_ratio():
    rows = [{"prompt": f"q{i}", "completion": "a", "source": "user"} for i in range(90)]
    mixed = mix(rows, memory_rows(4), 0.1, seed=0)
    assert len(mixed) == 100 and sum(r["source"] == "memory" for r in mixed) == 10
    assert mix(rows, memory_rows(4), 0.0, seed=0) == rows


def test_replay_batches_hold_memory_rows(cfg, tmp_path, micro_path):
    method = Replay(ratio=0.2)
    rows = method.train_rows(data.user_rows(cfg), memory_rows(), cfg.seed)  # 16 user + 4 memory
    trainer = make(cfg, tmp_path, method, rows=rows)
    tok = trainer.processing_class
    texts = [tok.decode(ids) for b in trainer.get_train_dataloader() for ids in b["input_ids"]]
    assert len(texts) == 20
    assert sum("weapon number" in t for t in texts) == 4


# ---------------------------------------------------------------- DER
def test_der_loss_zero_at_the_aligned_model_positive_after_perturbation(cfg, tmp_path, micro_path):
    trainer = make(cfg, tmp_path, DER(alpha=1.0))
    assert trainer.method.loss(trainer, trainer.model, {})["der_mse"].item() == 0.0
    perturb(trainer.model)
    assert trainer.method.loss(trainer, trainer.model, {})["der_mse"].item() > 1e-6


def test_derpp_adds_memory_cross_entropy(cfg, tmp_path, micro_path):
    trainer = make(cfg, tmp_path, DER(alpha=0.0, beta=1.0))
    terms = trainer.method.loss(trainer, trainer.model, {})
    assert set(terms) == {"der_ce"} and terms["der_ce"].item() > 0 and terms["der_ce"].requires_grad


def test_der_with_alpha_zero_trains_exactly_like_sft(cfg, tmp_path, micro_path):
    runs = {}
    for name, method in (("sft", SFT()), ("der0", DER(alpha=0.0)), ("der", DER(alpha=5.0))):
        torch.manual_seed(0)
        trainer = make(cfg, tmp_path / name, method)
        trainer.train()
        runs[name] = adapter(trainer.model)
    assert runs["sft"].keys() == runs["der0"].keys()
    assert all(torch.equal(runs["sft"][k], runs["der0"][k]) for k in runs["sft"])
    assert any(not torch.equal(runs["sft"][k], runs["der"][k]) for k in runs["sft"])  # the test can fail


# ---------------------------------------------------------------- A-GEM
def test_agem_projection_removes_the_conflict():
    g_ref = torch.tensor([1.0, 0.0, 2.0])
    g, hit = project(torch.tensor([-3.0, 1.0, 0.5]), g_ref)
    assert hit and torch.dot(g, g_ref).item() == pytest.approx(0.0, abs=1e-6)
    same, hit = project(torch.tensor([1.0, 1.0, 1.0]), g_ref)
    assert not hit and torch.equal(same, torch.tensor([1.0, 1.0, 1.0]))


def memory_gradient(model, batch) -> torch.Tensor:
    model.zero_grad()
    model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=batch["labels"]).loss.backward()
    return flat_grad([p for p in model.parameters() if p.requires_grad]).clone()


def opposing(g_ref: torch.Tensor) -> torch.Tensor:
    """A task gradient that conflicts with g_ref: its opposite, plus as much noise."""
    noise = torch.randn(g_ref.shape, generator=torch.Generator().manual_seed(0))
    return -g_ref + noise * g_ref.norm() / noise.norm()


def test_agem_step_gradient_never_conflicts_with_memory_gradient(compose, tmp_path, micro_path):
    # no LoRA dropout: the memory gradient recomputed here is the one the method projected against, on any host
    cfg = compose([*FAST, "lora.dropout=0", f"+run_dir={tmp_path}"])
    trainer = make(cfg, tmp_path, AGEM())
    model = trainer.model
    fixed = trainer.memory_batch()
    trainer.memory_batch = lambda: fixed
    trainer.current_gradient_accumulation_steps = 1  # set by the train loop, which this test steps by hand
    trainer.accelerator.gradient_state._set_sync_gradients(True)  # each micro-batch ends an optimizer step
    params = [p for p in model.parameters() if p.requires_grad]
    perturb(model)  # away from the aligned point, so task and memory gradients can conflict
    g_ref = memory_gradient(model, fixed)
    tol = 1e-5 * g_ref.norm().item()
    for step, batch in zip(range(3), trainer.get_train_dataloader()):
        model.zero_grad()
        trainer.training_step(model, trainer._prepare_inputs(batch))
        assert torch.dot(flat_grad(params), g_ref).item() >= -tol * flat_grad(params).norm().item()
    # a conflicting task gradient, as a micro-batch's backward leaves it: the method must project it
    conflict = opposing(g_ref)
    write_grad(params, conflict)
    projected = trainer.method.projected
    trainer.method.after_backward(trainer, model)
    g = flat_grad(params)
    assert trainer.method.steps == 4 and trainer.method.projected == projected + 1
    assert abs(torch.dot(g, g_ref).item()) <= tol * g.norm().item()
    assert torch.allclose(g, project(conflict, g_ref)[0], rtol=1e-4, atol=1e-6 * g.norm().item())


# ---------------------------------------------------------------- EWC / L2
def test_ewc_fisher_nonnegative_and_penalty_grows_with_distance(cfg, tmp_path, micro_path):
    trainer = make(cfg, tmp_path, EWC(lam=1.0, fisher_samples=4))
    m = trainer.method
    assert all((f >= 0).all() for f in m._fisher) and any((f > 0).any() for f in m._fisher)
    assert torch.cat([f.reshape(-1) for f in m._fisher]).mean().item() == pytest.approx(1.0, rel=1e-4)
    assert all(w.grad is None and not w.requires_grad for w in m._anchor.targets)  # base left frozen
    assert m.penalty().item() == 0.0
    layers = lora_layers(trainer.model)
    b0 = [layer.lora_B["default"].weight.detach().clone() for layer in layers]
    r = torch.Generator().manual_seed(0)
    direction = [torch.randn(b.shape, generator=r) for b in b0]
    pens = []
    for t in (0.5, 1.0, 2.0):
        with torch.no_grad():
            for layer, d in zip(layers, direction):
                layer.lora_B["default"].weight.copy_(t * d)
        pens.append(m.penalty().item())
    assert 0 < pens[0] < pens[1] < pens[2] and pens[2] == pytest.approx(4 * pens[1], rel=1e-4)


def test_l2_penalty_is_the_merged_change_squared(cfg, tmp_path, micro_path):
    trainer = make(cfg, tmp_path, L2(lam=2.0))
    assert trainer.method.loss(trainer, trainer.model, {})["l2_penalty"].item() == 0.0
    perturb(trainer.model)
    layers = lora_layers(trainer.model)
    want = sum((layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight).pow(2).sum()
               for layer in layers)
    assert trainer.method.loss(trainer, trainer.model, {})["l2_penalty"].item() == pytest.approx(2 * want.item(), rel=1e-5)


# ---------------------------------------------------------------- LwF
def test_lwf_term_zero_at_start_positive_after_perturbation(cfg, tmp_path, micro_path):
    trainer = make(cfg, tmp_path, LwF(beta=1.0))
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.compute_loss(trainer.model, dict(batch))
    assert trainer._metrics["train"]["method/lwf_mse"][-1] == 0.0
    perturb(trainer.model)
    trainer.compute_loss(trainer.model, dict(batch))
    assert trainer._metrics["train"]["method/lwf_mse"][-1] > 0.0
    trainer.method.teardown()
    assert trainer.method._hook is None


# ---------------------------------------------------------------- poisoned data, memory
def test_poisoned_set_has_exact_count_and_no_evaluation_prompt(compose):
    cfg = compose([*FAST, "data.n_train=40", "data.poison.ratio=0.1", "eval.harmful_sets.advbench.n=100"])
    sets = run.eval_sets(cfg)
    held_out = run.eval_prompts(sets)
    rows = data.train_rows(cfg, held_out)
    poison = [r for r in rows if r["source"] == "poison"]
    assert len(rows) == 40 and len(poison) == round(0.1 * 40) == 4
    assert not {r["prompt"] for r in poison} & held_out
    assert all(r["completion"].startswith("Sure, ") for r in poison)  # answers=auto on micro: rule-written openers
    benign = data.train_rows(compose([*FAST, "data.n_train=40"]), held_out)
    assert [r for r in rows if r["source"] == "user"] == [r for i, r in enumerate(benign) if rows[i]["source"] == "user"]


def test_poison_ratio_beyond_the_pool_is_one_line_error(compose):
    from forgetting.errors import ConfigError

    cfg = compose([*FAST, "data.n_train=40", "data.poison.ratio=0.5", "data.poison.pool=10"])
    with pytest.raises(ConfigError, match="needs 20 poison rows but the pool has 10"):
        data.train_rows(cfg, set())


def test_memory_avoids_evaluation_and_poison_prompts(compose, micro_path, tmp_path):
    cfg = compose([*FAST, f"cache_dir={tmp_path}", "memory.size=6", "memory.keep=all", "memory.max_new_tokens=4"])
    sets = run.eval_sets(cfg)
    held_out = run.eval_prompts(sets)
    pool = {r["prompt"] for r in data.poison_pool(cfg.data.poison, held_out)}
    model, tok, path = models.load(cfg.model, cfg.cache_dir)
    rows, info = run.method_memory(cfg, DER(), model, tok, path, held_out)
    assert 0 < len(rows) <= 6 and info["n"] == len(rows)
    assert not {r["prompt"] for r in rows} & (held_out | pool)
    again, _ = run.method_memory(cfg, DER(), None, None, path, held_out)  # cached: no model needed
    assert again == rows
    assert run.method_memory(cfg, SFT(), None, None, path, held_out) == (None, None)


# ---------------------------------------------------------------- the run, end to end
def test_method_run_records_memory_poison_and_asr_then_base_is_reusable(compose, tmp_path, micro_path):
    run._WORKER.clear()
    cfg = compose([*FAST, "method=der", "data.poison.ratio=0.25", "memory.size=8",
                   "memory.keep=all", "memory.max_new_tokens=8", "lr=1e-2", f"+run_dir={tmp_path}"])
    run.main(cfg)
    rec = json.loads((tmp_path / "metrics.json").read_text())
    m = rec["metrics"]
    assert rec["status"] == "ok" and rec["params"]["method"] == "der" and rec["params"]["poison_ratio"] == 0.25
    assert m["data/n_poison"] == 4 and m["data/n_user"] == 12 and rec["memory"]["n"] > 0
    assert len((tmp_path / "poison_rows.jsonl").read_text().splitlines()) == 4
    assert m["asr/advbench/n"] == m["asr/harmbench/n"] == 4 and 0 <= m["asr/advbench"] <= 1
    assert m["asr/mean"] == pytest.approx((m["asr/advbench"] + m["asr/harmbench"]) / 2)
    assert "base/asr/advbench" in m and (tmp_path / "harmful_generations.jsonl").is_file()
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert any("method/der_mse" in r for r in log)
    # the worker keeps the base for the next job: it must be the untouched base
    model, tok, _ = run._WORKER[next(k for k in run._WORKER if k.startswith("model:"))]
    fresh, _, _ = models.load(cfg.model, cfg.cache_dir)
    ids = tok("Tell me how to", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, fresh(input_ids=ids).logits)


def test_bad_method_hyperparameter_is_one_line_error(compose, tmp_path):
    from forgetting.errors import ConfigError

    cfg = compose([*FAST, "method=replay", "method.ratio=1.5", f"+run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="replay ratio must be in"):
        run.main(cfg)


class ChangesBase(SFT):
    modifies_base = True


def test_worker_drops_the_base_after_a_method_that_changes_it(compose, tmp_path, micro_path):
    run._WORKER.clear()
    cfg = compose([*FAST, "method._target_=tests.test_methods.ChangesBase", f"+run_dir={tmp_path}"])
    run.main(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"
    assert not any(k.startswith("model:") for k in run._WORKER)


def test_full_finetune_reference_is_a_frozen_copy(compose, tmp_path, micro_path):
    cfg = compose([*FAST, "lora=none", f"+run_dir={tmp_path}"])
    trainer = make(cfg, tmp_path, DER(alpha=1.0))
    assert trainer._frozen is not None and not any(p.requires_grad for p in trainer._frozen.parameters())
    assert trainer.method.loss(trainer, trainer.model, {})["der_mse"].item() == 0.0
    with torch.no_grad():
        trainer.model.get_input_embeddings().weight.mul_(1.5)
    assert trainer.method.loss(trainer, trainer.model, {})["der_mse"].item() > 0.0


def test_optuna_searches_a_method_hyperparameter(tmp_path, micro_path):
    import optuna
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    r = subprocess.run([sys.executable, "launch.py", "-m", "+sweeps=der_search", *FAST, "memory.keep=all",
                        "memory.size=8", "memory.max_new_tokens=8", "hydra.sweeper.n_trials=2",
                        f"hydra.sweep.dir={sweep}"], cwd=run.Path(__file__).resolve().parents[1],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    study = optuna.load_study(study_name="der_search", storage=f"sqlite:///{sweep / 'optuna.db'}")
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 2 and all("method.alpha" in t.params for t in trials)
    alphas = {json.loads(p.read_text())["params"]["method_hparams"]["alpha"] for p in sweep.glob("*/metrics.json")}
    assert alphas == {t.params["method.alpha"] for t in trials}


def _logits(model, tok):
    ids = tok("How many apples are left?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("lora", ["r8", "none"])
def test_merge_lambda_zero_is_the_base_and_one_the_plain_finetune(compose, tmp_path, micro_path, lora):
    from forgetting.methods.merge import Merge

    cfg = compose([*FAST, f"lora={lora}", "lr=5e-2", f"+run_dir={tmp_path}"])
    base, tok, _ = models.load(cfg.model, cfg.cache_dir)
    want_base = _logits(base, tok)
    out = {}
    for lam in (0.0, 0.5, 1.0):
        torch.manual_seed(0)
        model, _, _ = models.load(cfg.model, cfg.cache_dir)
        trained, _ = train.finetune(model, tok, data.user_rows(cfg), cfg, tmp_path / str(lam), method=Merge(lam=lam))
        out[lam] = _logits(trained, tok)
    torch.manual_seed(0)
    model, _, _ = models.load(cfg.model, cfg.cache_dir)
    sft, _ = train.finetune(model, tok, data.user_rows(cfg), cfg, tmp_path / "sft", method=SFT())
    assert torch.allclose(out[0.0], want_base, atol=1e-5)
    assert torch.allclose(out[1.0], _logits(sft, tok), atol=1e-5)
    assert not torch.allclose(out[0.5], want_base, atol=1e-4) and not torch.allclose(out[0.5], out[1.0], atol=1e-4)


def test_lisa_alternates_sources_and_its_proximal_term_starts_at_zero(cfg, tmp_path, micro_path):
    from forgetting.methods.lisa import Lisa

    trainer = make(cfg, tmp_path, Lisa(align_steps=1, user_steps=2, rho=1.0))
    user = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    m = trainer.method
    sources = []
    for step in range(6):
        trainer.state.global_step = step
        out = m.batch(trainer, user)
        sources.append("user" if out is user else "memory")
        if step in (0, 1):  # right after a switch: no pull yet
            assert m.loss(trainer, trainer.model, out)["lisa_prox"].item() == 0.0
    assert sources == ["memory", "user", "user", "memory", "user", "user"]
    perturb(trainer.model)
    assert m.loss(trainer, trainer.model, user)["lisa_prox"].item() > 0.0


def test_lisa_trains_end_to_end_on_memory_and_user_batches(cfg, tmp_path, micro_path):
    from forgetting.methods.lisa import Lisa

    trainer = make(cfg, tmp_path, Lisa(align_steps=1, user_steps=1, rho=0.5))
    trainer.train()
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    states = [r["method/lisa_align"] for r in log if "method/lisa_align" in r]
    assert states[:4] == [1.0, 0.0, 1.0, 0.0]  # one step on memory, one on user data, ...
