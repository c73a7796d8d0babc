"""SafeLoRA, MagMax and the unaligned reference they need (micro preset)."""
from __future__ import annotations

import pytest
import torch

from forgetting import data, models, run, train
from forgetting.errors import ConfigError
from forgetting.methods.magmax import MagMax, maxmag
from forgetting.methods.safelora import SafeLoRA, projector, similarity
from forgetting.methods.sft import SFT

FAST = ["model=micro", "eval=smoke", "data.n_train=16", "optimizer.batch_size=4", "logger=none"]


def _logits(model, tok):
    ids = tok("How many apples are left?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_micro_preset_keeps_an_unaligned_checkpoint_that_differs(compose, tmp_path, micro_path):
    cfg = compose([*FAST, f"+run_dir={tmp_path}"])
    assert models.unaligned_path(cfg.model, cfg.cache_dir) == str(micro_path / "unaligned")
    aligned, _, _ = models.load(cfg.model, cfg.cache_dir)
    un = models.unaligned_weights(cfg.model, cache_dir=cfg.cache_dir)
    shared = [n for n, _ in aligned.named_parameters() if n in un]
    assert len(shared) >= len(list(aligned.parameters())) - 1  # all but a tied head
    diffs = [float((dict(aligned.named_parameters())[n] - un[n]).abs().max()) for n in shared]
    assert min(diffs) >= 0 and max(diffs) > 1e-3


def test_method_needing_the_unaligned_model_stops_before_loading(compose, tmp_path):
    cfg = compose([*FAST, "model=hf", "model.name_or_path=/nonexistent", "method=safelora", f"+run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="model.unaligned"):
        run.build_method(cfg)


def test_maxmag_picks_the_larger_magnitude_entry():
    a = torch.tensor([1.0, -3.0, 0.5, 0.0])
    b = torch.tensor([-2.0, 1.0, 0.25, 0.0])
    assert torch.equal(maxmag(a, b), torch.tensor([-2.0, -3.0, 0.5, 0.0]))


def test_safelora_paper_projector_is_the_papers_and_subspace_projector_idempotent():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(12, 8, generator=g)
    c = projector(v, "paper")
    assert torch.allclose(c, v @ v.T / v.norm(), atol=1e-5)
    p = projector(v, "subspace", rank_frac=0.25)
    assert torch.allclose(p @ p, p, atol=1e-5) and round(float(torch.trace(p))) == 2
    delta = torch.randn(12, 8, generator=g)
    assert torch.allclose(p @ (p @ delta), p @ delta, atol=1e-5)
    assert similarity(p @ delta, p) == pytest.approx(1.0, abs=1e-5)  # already inside: nothing left to do


@pytest.fixture
def tuned(compose, tmp_path, micro_path):
    """A LoRA fine-tune of the micro preset (sft), with the config and tokenizer."""
    cfg = compose([*FAST, "lr=5e-2", f"+run_dir={tmp_path}"])
    torch.manual_seed(0)
    model, tok, _ = models.load(cfg.model, cfg.cache_dir)
    trained, _ = train.finetune(model, tok, data.user_rows(cfg), cfg, tmp_path / "sft", method=SFT())
    return cfg, tok, trained


def _safelora(cfg, **kw):
    from forgetting.methods.safelora import SafeLoRA as S

    m = S(**kw)
    m.unaligned_weights = lambda names: models.unaligned_weights(cfg.model, names, cfg.cache_dir)
    return m


def _b(model):
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_B" in k}


@pytest.mark.parametrize("projection", ["paper", "subspace"])
def test_safelora_projects_below_the_threshold_only(tuned, projection):
    cfg, tok, model = tuned
    before = _b(model)
    keep = _safelora(cfg, threshold=-1.0, projection=projection)  # no cosine is below -1: nothing moves
    keep.after_training(model)
    assert keep.metrics()["method/projected_layers"] == 0 and keep.metrics()["method/layers"] == len(before)
    assert all(torch.equal(before[k], v) for k, v in _b(model).items())
    allp = _safelora(cfg, threshold=1.0, projection=projection)  # every cosine is <= 1: all projected
    allp.after_training(model)
    assert allp.metrics()["method/projected_layers"] == len(before)
    assert any(not torch.allclose(before[k], v) for k, v in _b(model).items())
    if projection == "subspace":  # projecting again changes nothing
        once = _b(model)
        _safelora(cfg, threshold=1.0, projection=projection).after_training(model)
        assert all(torch.allclose(once[k], v, atol=1e-5) for k, v in _b(model).items())


def test_safelora_top_frac_projects_the_least_similar_share(tuned):
    cfg, tok, model = tuned
    m = _safelora(cfg, top_frac=0.5)
    m.after_training(model)
    sims = m.report["similarity"]
    assert len(m.report["projected"]) == round(len(sims) / 2)
    assert max(sims[n] for n in m.report["projected"]) <= min(s for n, s in sims.items() if n not in m.report["projected"])


@pytest.mark.parametrize("lora", ["r8", "none"])
def test_magmax_with_zero_user_vector_is_task_arithmetic_on_alignment(compose, tmp_path, micro_path, lora):
    """lr=0: the fine-tune changes nothing, so MagMax = unaligned + lam·(aligned − unaligned)."""
    cfg = compose([*FAST, f"lora={lora}", "lr=0", f"+run_dir={tmp_path}"])
    base, tok, _ = models.load(cfg.model, cfg.cache_dir)
    want = _logits(base, tok)
    for lam, same in ((1.0, True), (0.5, False)):
        model, _, _ = models.load(cfg.model, cfg.cache_dir)
        m = MagMax(lam=lam)
        m.unaligned_weights = lambda names: models.unaligned_weights(cfg.model, names, cfg.cache_dir)
        trained, _ = train.finetune(model, tok, data.user_rows(cfg), cfg, tmp_path / f"{lora}{lam}", method=m)
        assert torch.allclose(_logits(trained, tok), want, atol=1e-4) == same
        if lam == 0.5:  # check the weights themselves: halfway between unaligned and aligned
            un = models.unaligned_weights(cfg.model, None, cfg.cache_dir)
            lm = trained.get_base_model() if hasattr(trained, "get_base_model") else trained
            name = "model.layers.0.mlp.up_proj.weight"
            w = dict(lm.named_parameters())[name]
            w0 = dict(base.named_parameters())[name]
            assert torch.allclose(w, un[name] + 0.5 * (w0 - un[name]), atol=1e-6)


def test_magmax_takes_the_user_entry_where_it_is_larger(tuned, micro_path):
    cfg, tok, model = tuned
    from forgetting.methods.ewc import lora_delta
    from forgetting.methods.safelora import named_lora_layers

    name, layer = next(iter(named_lora_layers(model).items()))
    delta = lora_delta(layer).detach().clone()
    aligned = layer.base_layer.weight.detach().clone()
    un = models.unaligned_weights(cfg.model, None, cfg.cache_dir)["model.layers.0.self_attn.q_proj.weight"]
    m = MagMax(lam=1.0)
    m.unaligned_weights = lambda names: models.unaligned_weights(cfg.model, names, cfg.cache_dir)
    m.after_training(model)
    effective = layer.base_layer.weight.detach() + lora_delta(layer).detach()
    tau_a = aligned - un
    want = un + torch.where(delta.abs() > tau_a.abs(), delta, tau_a)
    assert "layers.0.self_attn.q_proj" in name
    assert torch.allclose(effective, want, atol=1e-5)
    assert 0 < m.metrics()["method/user_share"] < 1
