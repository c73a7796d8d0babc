"""Refresh Learning and SafeInstr do what their papers' code and data do (micro preset, real TRL trainer and PEFT
adapter): Refresh's step is the unlearn rule of the authors' code followed by the usual step; SafeInstr adds a fixed
count of distinct safety rows, none an evaluation prompt, trained as ordinary rows."""
import json
import subprocess
import sys

import pytest
import torch

from forgetting import data, run
from forgetting.errors import ConfigError
from forgetting.methods.refresh import Refresh
from forgetting.methods.safeinstr import SafeInstr, draw
from forgetting.methods.sft import SFT
from tests.test_method_fidelity import NO_DROPOUT, feed, params_of
from tests.test_methods import FAST, adapter, cfg, make, perturb  # noqa: F401 (cfg: a fixture)


def spy_batches(trainer) -> list[dict]:
    """Records the user batch of every step, as the method's batch hook receives it."""
    seen, hook = [], trainer.method.batch
    trainer.method.batch = lambda t, inputs: seen.append({k: v.clone() for k, v in inputs.items()}) or hook(t, inputs)
    return seen


def unlearn_by_hand(model, batch, fisher, delta, sigma, gamma, seed) -> None:
    """The authors' Derpp.unlearn, per trainable tensor: θ += δ (‖θ‖ g/‖g‖ + σ ξ) / (1 + γ F), g = ∇ batch loss."""
    params = params_of(model)
    grads = torch.autograd.grad(model(**feed(batch, labels=True)).loss, params, allow_unused=True)
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p, g, f in zip(params, grads, fisher):
            g = torch.zeros_like(p) if g is None else g
            ascent = p.norm() * g / g.norm() if g.norm() > 0 else torch.zeros_like(p)
            p += delta * (ascent + sigma * torch.randn(p.shape, generator=noise)) / (1 + gamma * f)


# ---------------------------------------------------------------- Refresh
def test_refresh_step_is_the_unlearn_rule_then_the_usual_step(compose, tmp_path, micro_path):
    # SGD, no warmup: the relearn step by hand is θ' − lr · clip(∇L(θ'))
    cfg = compose([*NO_DROPOUT, "optimizer.name=sgd", "optimizer.warmup_ratio=0", "lr=0.1", f"+run_dir={tmp_path}"])
    torch.manual_seed(0)
    refresh = Refresh(unlearn_lr=0.05, noise=0.5, fisher_damping=1e6, fisher_samples=4)
    trainer = make(cfg, tmp_path, refresh)
    model, params = trainer.model, params_of(trainer.model)
    fisher = [f.clone() for f in refresh._fisher]
    assert max((1e6 * f).max().item() for f in fisher) > 1  # the damping changes the step: the test can fail
    perturb(model)  # lora_B off zero: the ascent term has a direction (at B = 0 it is zero, ‖B‖ = 0)
    start = [p.detach().clone() for p in params]
    seen = spy_batches(trainer)
    trainer.args.max_steps = 1
    trainer.train()
    got = [p.detach().clone() for p in params]
    assert len(seen) == 1

    with torch.no_grad():
        for p, s in zip(params, start):
            p.copy_(s)
    batch = seen[0]
    loss_before = model(**feed(batch, labels=True)).loss.item()
    unlearn_by_hand(model, batch, fisher, 0.05, 0.5, 1e6, cfg.seed)
    unlearned = [p.detach().clone() for p in params]
    with torch.no_grad():
        assert model(**feed(batch, labels=True)).loss.item() > loss_before  # unlearning raised the batch's loss
    grads = torch.autograd.grad(model(**feed(batch, labels=True)).loss, params)
    clip = min(1.0, cfg.optimizer.max_grad_norm / (torch.cat([g.reshape(-1) for g in grads]).norm().item() + 1e-6))
    want = [u - cfg.lr * clip * g for u, g in zip(unlearned, grads)]
    for w, g in zip(want, got):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-6)
    sft_step = [s - cfg.lr * g for s, g in zip(start, torch.autograd.grad(
        model(**feed(batch, labels=True)).loss, params))]  # (any gradient: differs by the unlearn's size)
    assert any(not torch.allclose(g, s, atol=1e-3) for g, s in zip(got, sft_step))


def test_refresh_with_unlearn_lr_zero_trains_exactly_like_sft(compose, tmp_path, micro_path):
    cfg = compose([*NO_DROPOUT, f"+run_dir={tmp_path}"])
    runs = {}
    for name, method in (("sft", SFT()), ("zero", Refresh(unlearn_lr=0.0, fisher_samples=2)),
                         ("refresh", Refresh(unlearn_lr=0.05, fisher_samples=2))):
        torch.manual_seed(0)
        trainer = make(cfg, tmp_path / name, method)
        trainer.train()
        runs[name] = adapter(trainer.model)
    assert all(torch.equal(runs["sft"][k], runs["zero"][k]) for k in runs["sft"])  # no RNG, no gradient disturbed
    assert any(not torch.equal(runs["sft"][k], runs["refresh"][k]) for k in runs["sft"])  # the test can fail


def test_refresh_fisher_weighs_squared_gradients_by_the_response_probability(compose, tmp_path, micro_path):
    cfg = compose([*FAST, f"+run_dir={tmp_path}"])
    memory = [{"prompt": "How do I pick a lock?", "completion": "No.", "source": "memory"},
              {"prompt": "How do I make a weapon?", "completion": "I can't help with that.", "source": "memory"}]
    trainer = make(cfg, tmp_path, Refresh(fisher_samples=2), memory=memory)
    model, params = trainer.model, params_of(trainer.model)
    want = [torch.zeros_like(p) for p in params]
    model.eval()
    for row in trainer.memory.select(range(2)):
        b = trainer._prepare_inputs(trainer.data_collator([row]))
        logp = model(**feed(b)).logits[:, :-1].log_softmax(-1)
        labels = b["labels"][:, 1:]
        mean_logp = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)[labels != -100].mean()
        for w, g in zip(want, torch.autograd.grad(mean_logp, params)):
            w += mean_logp.exp().detach() * g.pow(2) / 2
    got = trainer.method._fisher
    assert any(w.abs().max() > 0 for w in want)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-10)
    assert all(p.grad is None for p in params)  # the estimate leaves no gradient behind


def test_refresh_unlearns_once_per_optimizer_step_under_accumulation(compose, tmp_path, micro_path):
    cfg = compose([*NO_DROPOUT, "optimizer.grad_accum=2", f"+run_dir={tmp_path}"])
    trainer = make(cfg, tmp_path, Refresh(fisher_samples=0))
    assert not trainer.method.needs_memory and trainer.memory is None  # F = 0: no memory asked for
    calls, unlearn = [], trainer.method.unlearn
    trainer.method.unlearn = lambda t, inputs: calls.append(t.state.global_step) or unlearn(t, inputs)
    batches, n_items = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 2, trainer.args.device)
    trainer.current_gradient_accumulation_steps = len(batches)  # set by the train loop, stepped here by hand
    for step in (0, 1):
        trainer.state.global_step = step
        for b in batches:
            trainer.training_step(trainer.model, b, n_items)
    assert calls == [0, 1]


# ---------------------------------------------------------------- SafeInstr
def safety(n: int) -> list[dict]:
    return [{"prompt": f"How do I build weapon number {i}?", "completion": f"No ({i}).", "source": "memory"}
            for i in range(n)]


def test_safeinstr_adds_the_configured_count_of_distinct_rows_drawn_by_a_seeded_order():
    rows = [{"prompt": f"q{i}", "completion": "a", "source": "user"} for i in range(200)]
    memory = safety(50)
    mixed = SafeInstr(n=20).train_rows(rows, memory, seed=0)
    added = mixed[200:]
    assert mixed[:200] == rows and len(added) == 20 and len({r["prompt"] for r in added}) == 20  # no repeats
    assert all(r in memory for r in added)
    assert len(SafeInstr(share=0.03).train_rows(rows, memory, seed=0)) == 206  # round(0.03 * 200)
    assert SafeInstr(n=20).train_rows(rows, memory[::-1], seed=0)[200:] == added  # whatever the memory's order
    assert draw(memory, 30, seed=0)[:20] == added  # a larger count keeps the smaller's rows
    assert draw(memory, 20, seed=1) != added  # the seed draws: the test can fail
    assert SafeInstr(n=0).train_rows(rows, memory, seed=0) == rows
    with pytest.raises(ConfigError, match="adds 51 safety rows but the safety memory holds 50"):
        SafeInstr(n=51).train_rows(rows, memory, seed=0)  # replay would cycle and repeat rows here
    with pytest.raises(ConfigError, match="share in"):
        SafeInstr(share=1.0)


def test_safeinstr_rows_from_the_papers_json_form_skip_evaluation_prompts(compose, tmp_path):
    cfg = compose([*FAST, "method=safeinstr", "method.n=6", "memory.size=100", f"cache_dir={tmp_path}"])
    held_out = run.eval_prompts(run.eval_sets(cfg))
    leaked = sorted(held_out)[:3]
    items = [{"instruction": p, "input": "", "output": "I can't help with that."} for p in leaked]
    items += [{"instruction": f"Explain how to forge document number {i}.", "input": "", "output": "I won't."}
              for i in range(6)]
    f = tmp_path / "safety_only_data_Instructions.json"  # the released file's form: a JSON array, Alpaca keys
    f.write_text(json.dumps(items))
    cfg.memory.path = f"file://{f}"  # a URL, downloaded into cache_dir once
    method = run.build_method(cfg)
    memory, info = run.method_memory(cfg, method, None, None, "", held_out)
    assert info["n"] == len(memory) == 6 and list((tmp_path / "downloads").glob("*-safety_only*.json"))
    rows = method.train_rows(data.train_rows(cfg, held_out), memory, cfg.seed)
    added = [r for r in rows if r["source"] == "memory"]
    assert len(rows) == 16 + 6 and len(added) == 6
    assert not {r["prompt"] for r in added} & held_out
    assert {r["completion"] for r in added} == {"I won't."}


def test_safeinstr_rows_are_trained_as_ordinary_rows(cfg, tmp_path, micro_path):
    method = SafeInstr(n=4)
    rows = method.train_rows(data.user_rows(cfg), safety(8), cfg.seed)
    trainer = make(cfg, tmp_path, method, rows=rows)
    assert not trainer.method.memory_batches and trainer.memory is None  # no second stream: the rows are data
    tok = trainer.processing_class
    batches = [trainer._prepare_inputs(b) for b in trainer.get_train_dataloader()]
    texts = [tok.decode(ids) for b in batches for ids in b["input_ids"]]
    assert len(texts) == 20 and sum("weapon number" in t for t in texts) == 4
    for b in batches:
        for ids, labels in zip(b["input_ids"], b["labels"]):
            if "weapon number" in tok.decode(ids):  # the refusal is a training target, as a user answer is
                assert "No (" in tok.decode(labels[labels != -100])
        with torch.no_grad():  # one loss: the token mean over the batch, memory rows included
            assert trainer.compute_loss(trainer.model, dict(b)).item() == pytest.approx(
                trainer.model(**feed(b, labels=True)).loss.item(), rel=1e-5)


# ---------------------------------------------------------------- through launch.py
MEMORY = ["memory.keep=all", "memory.size=8", "memory.max_new_tokens=8"]


@pytest.mark.parametrize("method,extra", [("refresh", ["method.fisher_samples=4", "method.unlearn_lr=1e-3"]),
                                          ("safeinstr", ["method.n=4"])])
def test_a_micro_run_of_the_method_through_launch(tmp_path, micro_path, method, extra):
    r = subprocess.run([sys.executable, "launch.py", *FAST, f"method={method}", *extra, *MEMORY,
                        f"hydra.run.dir={tmp_path}"], cwd=run.Path(__file__).resolve().parents[1],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((tmp_path / "metrics.json").read_text())
    assert rec["status"] == "ok" and rec["params"]["method"] == method
    m = rec["metrics"]
    assert m["data/n_user"] == 16 and m["data/n_memory"] == (4 if method == "safeinstr" else 0)
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    if method == "refresh":
        assert any(r.get("method/unlearn_norm", 0) > 0 for r in log)
