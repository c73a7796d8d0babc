"""Training stages of the tiny preset, on transformers' Trainer (CPU, fp32): an optional LM
pretraining on shipped text, then the alignment SFT with a weighted loss (assistant tokens 1,
prompt tokens `prompt_loss_weight`: a from-scratch model learns language from the prompts too)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments


class Collate:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, feats):
        width = max(len(f["input_ids"]) for f in feats)
        ids = torch.full((len(feats), width), self.pad_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        w = torch.zeros((len(feats), width))
        for j, f in enumerate(feats):
            n = len(f["input_ids"])
            ids[j, :n] = torch.tensor(f["input_ids"])
            att[j, :n] = 1
            w[j, :n] = torch.tensor(f["weights"], dtype=torch.float)
        return {"input_ids": ids, "attention_mask": att, "loss_weights": w}


class WeightedTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        w = inputs.pop("loss_weights")[:, 1:]
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        ce = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), inputs["input_ids"][:, 1:].flatten(),
                             reduction="none").view_as(w)
        loss = (ce * w).sum() / w.sum().clamp(min=1e-6)
        return (loss, out) if return_outputs else loss


class LossLog(TrainerCallback):
    """Keeps the logged losses and shows one progress bar per stage (steps, elapsed, estimate left, loss)."""

    def __init__(self, desc: str = "train"):
        self.losses: list[float] = []
        self.desc, self.bar = desc, None

    def on_train_begin(self, args, state, control, **kw):
        self.bar = tqdm(total=state.max_steps, desc=f"[forgetting.tiny] {self.desc}", unit="step", leave=True)

    def on_step_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{self.losses[-1]:.3f}")

    def on_train_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.close()


def run(model, feats: list[dict], pad_id: int, cfg: dict, seed: int, out_dir: str, desc: str = "train") -> dict:
    """Train `model` in place on feats [{input_ids, weights}]; → {steps, final_loss, losses, seconds}."""
    args = TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=cfg.get("batch_size", 16),
        num_train_epochs=cfg.get("epochs", 1), max_steps=cfg.get("steps", -1) or -1,
        learning_rate=cfg.get("lr", 1e-3), lr_scheduler_type=cfg.get("scheduler", "cosine"),
        warmup_steps=cfg.get("warmup_ratio", 0.05), weight_decay=cfg.get("weight_decay", 0.0),
        max_grad_norm=1.0, logging_steps=cfg.get("logging_steps", 10), save_strategy="no", report_to="none",
        use_cpu=True, bf16=False, fp16=False, activation_checkpointing=False,  # (was gradient_checkpointing)
        seed=seed, data_seed=seed,
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if cfg.get("group_by_length", True) else "random", remove_unused_columns=False,
        disable_tqdm=True, log_level="error")
    log = LossLog(desc)
    tr = WeightedTrainer(model=model, args=args, train_dataset=feats, data_collator=Collate(pad_id), callbacks=[log])
    tr.remove_callback(PrinterCallback)  # disable_tqdm adds it: it prints every log dict
    res = tr.train()
    return {"steps": res.global_step, "train_loss": round(res.training_loss, 4),
            "final_loss": log.losses[-1] if log.losses else None, "losses": [round(x, 4) for x in log.losses],
            "seconds": round(res.metrics.get("train_runtime", 0.0), 1)}


def lm_features(tok, texts: list[str], max_length: int) -> list[dict]:
    """Plain LM rows: <|begin|> text <|end|>, cut to max_length, loss on every token."""
    out = []
    for t in texts:
        ids = [tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"][: max_length - 2] + [tok.eos_token_id]
        out.append({"input_ids": ids, "weights": [1.0] * len(ids)})
    return out
