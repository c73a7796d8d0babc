"""Where the model runs, on the micro preset: on a CUDA GPU when there is one, else on the CPU
(FORGETTING_TEST_DEVICE=cpu|cuda picks): bf16 generation, LoRA training (bf16 mixed precision on CUDA), 4-bit
(QLoRA) loading and training; on CUDA only, generation with the dynamic cache and one prompt pass (model.generate()'s
tokens) and a sweep through the GPU launcher. This project has had no GPU: the CUDA side is written, never run.
On a GPU machine: `pytest tests/test_device.py`."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DEVICE = os.environ.get("FORGETTING_TEST_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA GPU")
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="a CUDA-only path")
PROMPTS = ["How many apples?", "Tell me a long story about the market.", "Hi", "What is 2 + 2?", "Name a colour.",
           "Why?"]


def encode(tok, model):
    from forgetting import generate as gen

    enc = tok([gen.chat_prompt(tok, p) for p in PROMPTS], return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(model.device) for k, v in enc.items()}


@cuda_only
def test_greedy_on_the_gpu_gives_generates_tokens(random_micro):
    """On CUDA: the dynamic cache and one prompt pass; rows leave the batch as they stop; the tokens are
    model.generate()'s (on CPU: test_generate_stop.test_dropping_finished_rows_gives_transformers_greedy_output)."""
    from transformers import DynamicCache

    from forgetting import generate as gen

    model, tok = random_micro(DEVICE)
    enc = encode(tok, model)
    n, width = enc["input_ids"].shape
    assert isinstance(gen.cache_for(n, model, width + 20), DynamicCache) and gen.prefill_rows(n, model) == n
    pad = tok.pad_token_id or 0
    free = model.generate(**enc, max_new_tokens=20, do_sample=False, eos_token_id=gen.eos_ids(model, tok),
                          pad_token_id=pad)
    stops = sorted(set(gen.eos_ids(model, tok)) | {int(free[0, width + 2])})  # rows then stop at different steps
    ref = model.generate(**enc, max_new_tokens=20, do_sample=False, eos_token_id=stops, pad_token_id=pad)
    out = gen.greedy(model, enc["input_ids"], enc["attention_mask"], 20, stops)
    for r, row in zip(ref[:, width:].tolist(), out):
        k = next((i for i, t in enumerate(r) if t in stops), None)
        assert row == (r if k is None else r[:k + 1])
    assert len({len(row) for row in out}) > 1


def test_bf16_generation_runs_in_bf16_and_matches_generate(random_micro):
    """bf16 weights (the dtype `auto` picks on a GPU that has it): the KV cache and the logits stay bf16, and
    with no row stopping early the tokens are model.generate()'s on the same batch. Two code paths round bf16
    differently on different CPU kernels, so a row may part from generate()'s only where its top two logits
    are within bf16 rounding of each other (random weights have such near-ties); it stops being compared there."""
    from forgetting import generate as gen

    model, tok = random_micro(DEVICE, torch.bfloat16)
    enc = encode(tok, model)
    width = enc["input_ids"].shape[1]
    model.generation_config.eos_token_id = None  # no row stops: the batch keeps its shape in both
    ref = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id,
                         output_scores=True, return_dict_in_generate=True)
    out = gen.greedy(model, enc["input_ids"], enc["attention_mask"], 12, [])
    same = 0
    for i, (row, want) in enumerate(zip(out, ref.sequences[:, width:].tolist())):
        k = next((j for j, (a, b) in enumerate(zip(row, want)) if a != b), None)
        if k is None:
            same += 1
            continue
        top2 = ref.scores[k][i].float().topk(2).values
        assert top2[0] - top2[1] <= 4 * 2 ** -8 * top2[0].abs().clamp(min=1), (i, k, top2)
    assert same >= len(PROMPTS) - 1  # a near-tie is rare: most rows match generate() token for token
    fwd, cache = gen.forward_fn(model), gen.cache_for(1, model, width + 1)
    ids, mask = enc["input_ids"][:1], enc["attention_mask"][:1]
    logits = fwd(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), cache)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert cache.layers[0].keys.dtype == torch.bfloat16
    texts = gen.generate(model, tok, PROMPTS, 8, 4)
    assert len(texts) == len(PROMPTS) and all(t["n_tokens"] <= 8 for t in texts)


def lora_b(model) -> list[torch.Tensor]:
    return [p.detach().float().clone() for n, p in model.named_parameters() if "lora_B" in n]


def test_lora_training_on_the_device(compose, tmp_path):
    """A LoRA fine-tune where the model lives (bf16 mixed precision on a GPU that has it, fp32 on CPU): finite
    losses, the adapter moves, and its weights stay on the device."""
    from forgetting import data, models, train

    cfg = compose(["model=micro", "logger=none", "data.n_train=16", "optimizer.batch_size=8", "epochs=1",
                   "train_cache=false", "lr=1e-2"])
    model, tok, _ = models.load(cfg.model, cfg.cache_dir)
    assert model.device.type == DEVICE
    trainer, log = train.make_trainer(model, tok, data.user_rows(cfg), cfg, tmp_path)
    assert trainer.args.bf16 == (DEVICE == "cuda" and torch.cuda.is_bf16_supported())
    before = lora_b(trainer.model)
    assert before and all((b == 0).all() for b in before)  # LoRA B starts at zero
    trainer.train()
    losses = [h["loss"] for h in log.history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    assert any((b != 0).any() for b in lora_b(trainer.model))
    assert {p.device.type for p in trainer.model.parameters()} == {DEVICE}


@pytest.mark.parametrize("avx512bf16", [False, True], ids=["avx2-path", "avx512bf16-path"])
def test_4bit_model_loads_generates_and_trains(compose, tmp_path, monkeypatch, avx512bf16):
    """model.load_in_4bit (bitsandbytes NF4, bf16 compute): the linear layers are 4-bit, generation runs and a
    LoRA step on top of them gives a finite loss, whichever CPU path bitsandbytes would pick. Its Linear4bit
    asks `has_avx512bf16()` when built (forced both ways here); on such a CPU an eval-mode forward repacks the
    weights for an inference kernel that fails on 32-wide layers and passes no gradient to the layer's input.
    models.load pins the plain path on CPU, so after generating, the layers still pass gradients."""
    bnb = pytest.importorskip("bitsandbytes")
    from forgetting import data, env, generate, models, train

    monkeypatch.setattr(bnb.nn.modules, "has_avx512bf16", lambda: avx512bf16)
    cfg = compose(["model=micro", "model.load_in_4bit=true", "logger=none", "data.n_train=16",
                   "optimizer.batch_size=8", "epochs=1", "train_cache=false"])
    model, tok, _ = models.load(cfg.model, cfg.cache_dir)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and env.device_name(model).startswith(DEVICE) and env.device_name(model).endswith(", 4-bit")
    assert len(generate.generate(model, tok, PROMPTS[:3], 6, 3)) == 3
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    x = torch.randn(2, layers[0].in_features, device=model.device, requires_grad=True)
    layers[0].train()
    layers[0](x).float().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the frozen 4-bit weight passes gradients on
    trainer, log = train.make_trainer(model, tok, data.user_rows(cfg), cfg, tmp_path)
    trainer.train()
    losses = [h["loss"] for h in log.history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)


@cuda_only
def test_sweep_through_the_gpu_launcher(tmp_path):
    """`launch.py -m hydra/launcher=gpus`: two jobs on GPU 0, one after the other, both finish."""
    d = tmp_path / "sweep"
    r = subprocess.run([sys.executable, "launch.py", "-m", "hydra/launcher=gpus", "hydra.launcher.gpus=[0]",
                        "model=micro", "eval=smoke", "data.n_train=16", "optimizer.batch_size=8", "logger=none",
                        "lr=1e-3,3e-3", f"hydra.sweep.dir={d}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in d.rglob("metrics.json")]
    assert len(runs) == 2 and {x["status"] for x in runs} <= {"ok", "collapsed"}
    assert all(x["device"].startswith("cuda:0 (") for x in runs)  # each job saw its GPU as device 0
