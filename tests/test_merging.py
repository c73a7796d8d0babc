"""SafeLoRA, MagMax and the unaligned reference they need (micro preset)."""
from __future__ import annotations

import pytest
import torch

from forgetting import data, models, run, train
from forgetting.errors import ConfigError
from forgetting.methods.ewc import named_lora_layers
from forgetting.methods.magmax import MagMax
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


def test_magmax_measures_both_task_vectors_from_the_unaligned_weights():
    from forgetting.methods.magmax import magmax  # local: the other tests also run against older code

    u = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])
    aligned = torch.tensor([1.0, 1.0, -2.0, 0.0, 1.0])
    tuned = torch.tensor([-0.5, 3.0, 2.5, 0.0, -1.0])  # entry 0: Δ = −1.5, yet |τ_user| = 0.5 < |τ_align| = 1
    merged, won = magmax(u, aligned, tuned, 1.0)
    assert torch.equal(merged, torch.tensor([1.0, 3.0, 2.5, 0.0, 1.0]))  # ties (entries 3, 4): aligned
    assert won.tolist() == [False, True, True, False, False]
    assert torch.equal(magmax(u, aligned, tuned, 0.5)[0], torch.tensor([0.5, 1.5, 1.25, 0.5, 0.5]))
    assert torch.equal(magmax(u, aligned, tuned, 0.0)[0], u)


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


def _delta(layer):
    """The adapter's weight change, float32 (scaling·B·A)."""
    a = layer.active_adapters[0]
    return layer.scaling[a] * (layer.lora_B[a].weight.float() @ layer.lora_A[a].weight.float())


def _weights(model) -> dict:
    """{plain parameter name: effective weight, float32} (LoRA: base + the adapter's delta)."""
    peft = hasattr(model, "get_base_model")
    layers = {n.removeprefix("base_model.model.") + ".weight": m for n, m in named_lora_layers(model).items()}
    out = {}
    for n, p in (model.get_base_model() if peft else model).named_parameters():
        n = MagMax.plain(n)
        if "lora_" not in n:
            out[n] = p.detach().float() + (_delta(layers[n]) if n in layers else 0)
    return out


class _Spy(MagMax):
    """MagMax that records the fine-tuned weights first."""

    def after_training(self, model):
        self.tuned = _weights(model)
        return super().after_training(model)


@pytest.mark.parametrize("lora", ["r8", "none"])
def test_magmax_at_one_keeps_the_aligned_or_the_finetuned_entry(compose, tmp_path, micro_path, lora):
    """θ_u + maxmag(τ_align, τ_user), τ_user = θ_tuned − θ_u: each entry is copied from one of the two models."""
    cfg = compose([*FAST, f"lora={lora}", "lr=5e-2", f"+run_dir={tmp_path}"])
    torch.manual_seed(0)
    model, tok, _ = models.load(cfg.model, cfg.cache_dir)
    aligned = _weights(model)
    m = _Spy(lam=1.0)
    m.unaligned_weights = lambda names: models.unaligned_weights(cfg.model, names, cfg.cache_dir)
    merged = _weights(train.finetune(model, tok, data.user_rows(cfg), cfg, tmp_path / "run", method=m)[0])
    un = models.unaligned_weights(cfg.model, None, cfg.cache_dir)
    won = total = moved = 0
    for n, w in merged.items():
        if n not in un:
            continue  # the head tied to the embeddings
        a, t, u = aligned[n], m.tuned[n], un[n].float()
        user = (t - u).abs() > (a - u).abs()
        assert torch.equal(w, torch.where(user, t, a)), n
        if lora == "none" or any(k in n for k in cfg.lora.target_modules):
            won, total, moved = won + int(user.sum()), total + user.numel(), moved + int((t != a).sum())
        else:
            assert torch.equal(t, a) and torch.equal(w, a)  # not trained: the aligned weight
    assert moved > total / 2 and 0 < won < total
    assert m.metrics()["method/user_share"] == pytest.approx(won / total)


def test_magmax_bf16_base_holds_the_merged_weight(compose, tmp_path, micro_path):
    """In bf16, base + adapter after the merge is the merged weight up to bf16 rounding of that weight."""
    from peft import get_peft_model

    cfg = compose([*FAST, "model.dtype=bfloat16", f"+run_dir={tmp_path}"])
    base, _, _ = models.load(cfg.model, cfg.cache_dir)
    model = get_peft_model(base, train.lora_config(cfg.lora)).eval()
    un = models.unaligned_weights(cfg.model, None, cfg.cache_dir)
    g = torch.Generator().manual_seed(0)
    want = {}
    with torch.no_grad():
        for n, layer in named_lora_layers(model).items():  # a fine-tune as large as the alignment's change
            w, u = layer.base_layer.weight.float(), un[n.removeprefix("base_model.model.") + ".weight"].float()
            b = layer.lora_B["default"].weight
            b.copy_(torch.randn(b.shape, generator=g))
            b.mul_((w - u).std() / _delta(layer).std())
            t = w + _delta(layer)
            want[n] = torch.where((t - u).abs() > (w - u).abs(), t, w)
    m = MagMax(lam=1.0)
    m.unaligned_weights = lambda names: models.unaligned_weights(cfg.model, names, cfg.cache_dir)
    m.after_training(model)
    assert 0 < m.metrics()["method/user_share"] < 1
    with torch.no_grad():
        for n, layer in named_lora_layers(model).items():
            eye = torch.eye(layer.in_features, dtype=torch.bfloat16)
            got = layer(eye).T.float()  # the layer's effective weight, as its forward applies it
            assert layer.base_layer.weight.dtype == torch.bfloat16
            assert ((got - want[n]).abs() <= 2**-8 * want[n].abs()).all(), n


def test_magmax_saves_and_caches_the_plain_finetune(compose, tmp_path, micro_path):
    """The adapter saved with a MagMax run, and the cached training it reused, are sft's adapter."""
    from safetensors.torch import load_file

    from forgetting import reuse

    cfg = compose([*FAST, "lr=5e-2", f"cache_dir={tmp_path / 'cache'}", f"+run_dir={tmp_path}"])
    rows = data.user_rows(cfg)
    for d, method in (("sft", SFT()), ("magmax", MagMax(lam=1.0)), ("again", MagMax(lam=1.0))):
        method.unaligned_weights = lambda names: models.unaligned_weights(cfg.model, names, cfg.cache_dir)
        torch.manual_seed(0)
        model, tok, _ = models.load(cfg.model, cfg.cache_dir)
        trained, _ = train.finetune(model, tok, rows, cfg, tmp_path / d, method=method)
        if d != "sft":
            assert all('"reused": true' in x for x in (tmp_path / d / "train_log.jsonl").read_text().splitlines())
            trained.eval()
            if d == "again":  # the cached adapter was not touched by the first MagMax run
                assert torch.equal(_logits(trained, tok), first)
            first = _logits(trained, tok)
    want = load_file(str(reuse.path(cfg, rows) / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in want.items() if "lora_B" in k)
    for d in ("sft", "magmax"):
        got = load_file(str(tmp_path / d / "adapter" / "adapter_model.safetensors"))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_magmax_merges_in_blocks_with_the_same_result(compose, tmp_path, micro_path, monkeypatch):
    """A few rows at a time (magmax.CHUNK: the 128256 x 2048 embedding of Llama 3.2 1B took ~6 GB of float32
    temporaries at once, `make rehearsal`) gives the same weights and share as the whole tensor at once."""
    from peft import get_peft_model

    import forgetting.methods.magmax as mm

    assert [list(range(5))[s] for s in mm.row_blocks(torch.zeros(5, 3))] == [[0, 1, 2, 3, 4]]
    monkeypatch.setattr(mm, "CHUNK", 7)
    assert [list(range(5))[s] for s in mm.row_blocks(torch.zeros(5, 3))] == [[0, 1], [2, 3], [4]]
    cfg = compose([*FAST, f"+run_dir={tmp_path}"])
    out = []
    for chunk in (1 << 40, 7):  # everything at once; one row (32 entries) at a time
        monkeypatch.setattr(mm, "CHUNK", chunk)
        base, _, _ = models.load(cfg.model, cfg.cache_dir)
        torch.manual_seed(0)
        model = get_peft_model(base, train.lora_config(cfg.lora))
        with torch.no_grad():
            for layer in named_lora_layers(model).values():
                layer.lora_B["default"].weight.normal_()
        m = MagMax(lam=0.7)
        m.unaligned_weights = lambda names: models.unaligned_weights(cfg.model, names, cfg.cache_dir)
        m.after_training(model)
        out.append(({n: p.detach().clone() for n, p in model.named_parameters()}, m.metrics()))
    (a, ma), (b, mb) = out
    assert ma == mb and 0 < ma["method/user_share"] < 1
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
