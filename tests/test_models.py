"""Model loading: the 4-bit QLoRA path on CPU, clear errors for unavailable models, and the
reference preset's resolved config."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from forgetting import models, train
from forgetting.errors import HubError
from forgetting.models import ModelLoadError

ROOT = Path(__file__).resolve().parents[1]


def model_cfg(path, **kw):
    return OmegaConf.create({"name": "t", "name_or_path": str(path), "dtype": "float32", "load_in_4bit": False,
                             "trust_remote_code": False, "simulation": True, **kw})


def test_4bit_qlora_path_trains_on_cpu(micro_path, tmp_path):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    with pytest.warns(UserWarning, match="load_in_4bit on CPU"):
        model, tok, _ = models.load(model_cfg(micro_path, load_in_4bit=True))
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    cfg = OmegaConf.create({
        "optimizer": {"name": "adamw_torch", "weight_decay": 0.0, "warmup_ratio": 0.0, "lr_scheduler_type": "constant",
                      "batch_size": 4, "grad_accum": 1, "max_grad_norm": 1.0, "max_length": 64},
        "lr": 1e-2, "epochs": 1, "seed": 0, "eval": {"system_prompt": None},
        "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "bias": "none"}})
    rows = [{"prompt": "What is 2 + 2?", "completion": "2 + 2 = 4."}] * 8
    trained, history = train.finetune(model, tok, rows, cfg, tmp_path)
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 2 and all(loss == loss for loss in losses)
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any("lora_A" in k for k in weights) and all("lora" in k for k in weights)


def test_unavailable_model_names_the_fix():
    # offline (tests) and not in the hub cache: one line naming `forgetting download` (gated: tests/test_hub.py)
    for repo in ("meta-llama/Llama-3.2-1B-Instruct", "unsloth/Llama-3.2-1B-Instruct"):
        with pytest.raises(HubError, match=rf"^{repo} is not in the hub cache .*forgetting download") as e:
            models.load(model_cfg(repo))
        assert "\n" not in str(e.value)
    with pytest.raises(ModelLoadError, match="check the hub id or the local path"):
        models.load(model_cfg("no-such-owner/no-such-model/x"))  # neither a hub id nor a directory


def test_dtype_auto_is_fp32_on_cpu():
    import torch

    assert models.torch_dtype("auto") == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)


def test_reference_setup_resolves():
    r = subprocess.run([sys.executable, "launch.py", "model=llama3_2_1b_instruct", "judge=llamaguard_7b", "--cfg", "job",
                        "--resolve"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    cfg = OmegaConf.create(r.stdout)
    assert cfg.model.name_or_path == "unsloth/Llama-3.2-1B-Instruct" and cfg.model.load_in_4bit is True
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 16, 0.1)
    assert cfg.judge.model_name_or_path == "meta-llama/LlamaGuard-7b"


def train_cfg(**optimizer):
    """A small training config (LoRA r4 on q_proj, constant lr) for make_trainer."""
    return OmegaConf.create({
        "optimizer": {"name": "adamw_torch", "weight_decay": 0.0, "warmup_ratio": 0.0, "lr_scheduler_type": "constant",
                      "batch_size": 2, "grad_accum": 1, "max_grad_norm": 1.0, "max_length": 256, **optimizer},
        "lr": 1e-3, "epochs": 1, "seed": 0, "eval": {"system_prompt": None},
        "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"], "bias": "none"}})


def test_loss_is_on_the_assistant_completion_only(micro_path, tmp_path):
    model, tok, _ = models.load(model_cfg(micro_path))
    cfg = train_cfg()
    rows = [{"prompt": "Add 17 and 25.", "completion": "17 + 25 = 42. #### 42"}]
    trainer, _ = train.make_trainer(model, tok, rows, cfg, tmp_path)
    ex = trainer.train_dataset[0]
    ids, mask = ex["input_ids"], [label != -100 for label in ex["labels"]]  # TRL folds the completion mask in
    learned = tok.decode([i for i, m in zip(ids, mask) if m])
    context = tok.decode([i for i, m in zip(ids, mask) if not m])
    assert learned.startswith("17 + 25 = 42. #### 42" + tok.eos_token)
    assert "Add 17 and 25." in context and "42" not in context  # the prompt and template carry no loss


def test_cpu_training_loss_equals_trls_fused_head_loss(micro_path, tmp_path):
    """On CPU MethodTrainer uses the model's own loss instead of TRL's fused LM head (x1.8 faster): same NLL."""
    from trl import SFTTrainer

    model, tok, _ = models.load(model_cfg(micro_path))
    cfg = train_cfg()
    rows = [{"prompt": "Add 17 and 25.", "completion": "17 + 25 = 42. #### 42"},
            {"prompt": "A farmer has 3 hens and buys 4 more. How many hens?", "completion": "3 + 4 = 7. #### 7"}]
    trainer, _ = train.make_trainer(model, tok, rows, cfg, tmp_path)
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(2)]))
    assert batch["attention_mask"].eq(0).any()  # rows of different lengths: padding is in the batch
    trainer.model.eval()
    for n_items in (None, torch.tensor(9)):
        ours = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=n_items)
        fused = SFTTrainer.compute_loss(trainer, trainer.model, dict(batch), num_items_in_batch=n_items)
        assert torch.allclose(ours, fused, atol=1e-5), (n_items, ours, fused)


@pytest.mark.parametrize("grouped", [True, False])
def test_training_batches_are_grouped_by_length(micro_path, tmp_path, grouped):
    """optimizer.group_by_length: batches of similar lengths, so far less padding than random batches."""
    model, tok, _ = models.load(model_cfg(micro_path))
    cfg = train_cfg(batch_size=4, group_by_length=grouped)
    rows = [{"prompt": "Add these numbers: " + " ".join(["7"] * (1 + (i * 7) % 40)), "completion": "Done."}
            for i in range(128)]  # transformers sorts within megabatches of min(n // (4 batch), 50) batches
    trainer, _ = train.make_trainer(model, tok, rows, cfg, tmp_path)
    torch.manual_seed(0)
    masks = [b["attention_mask"] for b in trainer.get_train_dataloader()]
    padding = sum(int(m.eq(0).sum()) for m in masks) / sum(m.numel() for m in masks)
    assert (padding < 0.1) if grouped else (padding > 0.2), padding  # measured 5.7 % vs 28 %
