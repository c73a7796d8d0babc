"""Post-hoc methods reuse an identical sft training instead of training again (micro preset)."""
import torch

from forgetting import data, models, reuse, train
from forgetting.methods.merge import Merge
from forgetting.methods.sft import SFT

FAST = ["model=micro", "eval=smoke", "data.n_train=16", "optimizer.batch_size=4", "logger=none", "lr=5e-2"]


def _logits(model, tok):
    ids = tok("How many apples are left?", return_tensors="pt")["input_ids"]
    model.eval()  # no LoRA dropout (the Trainer leaves the model in train mode)
    with torch.no_grad():
        return model(input_ids=ids).logits


def _run(cfg, method, d):
    torch.manual_seed(0)
    model, tok, _ = models.load(cfg.model, cfg.cache_dir)
    trained, history = train.finetune(model, tok, data.user_rows(cfg), cfg, d, method=method)
    return trained, tok, history


def test_merge_at_one_reuses_the_sft_adapter_and_matches_it(compose, tmp_path, micro_path, monkeypatch):
    cfg = compose([*FAST, f"cache_dir={tmp_path / 'cache'}"])
    sft, tok, hist = _run(cfg, SFT(), tmp_path / "sft")
    rows = data.user_rows(cfg)
    assert (reuse.path(cfg, rows) / "history.json").is_file()

    def no_training(*a, **k):
        raise AssertionError("trained again although an identical training was cached")

    monkeypatch.setattr(train, "make_trainer", no_training)
    merged, _, hist2 = _run(cfg, Merge(lam=1.0), tmp_path / "merge")
    assert hist2 == hist and torch.allclose(_logits(merged, tok), _logits(sft, tok), atol=1e-6)
    assert (tmp_path / "merge" / "adapter" / "adapter_model.safetensors").is_file()
    assert all('"reused": true' in line for line in (tmp_path / "merge" / "train_log.jsonl").read_text().splitlines())


def test_no_reuse_across_settings_or_when_turned_off(compose, tmp_path, micro_path):
    cfg = compose([*FAST, f"cache_dir={tmp_path / 'cache'}"])
    rows = data.user_rows(cfg)
    other = compose([*FAST, f"cache_dir={tmp_path / 'cache'}", "lr=1e-2"])
    assert reuse.key(cfg, rows) != reuse.key(other, rows) != reuse.key(cfg, rows[:-1])
    assert reuse.eligible(cfg, Merge()) and reuse.eligible(cfg, SFT())
    from forgetting.methods.der import DER

    assert not reuse.eligible(cfg, DER())  # trains differently
    assert not reuse.eligible(compose([*FAST, "train_cache=false"]), Merge())
    assert not reuse.eligible(compose([*FAST, "eval.every_epoch=true"]), Merge())  # curves need the training
    assert not reuse.eligible(compose([*FAST, "lora=none"]), Merge())
