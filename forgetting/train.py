"""Fine-tuning: TRL's SFTTrainer (with the method's hooks: methods.trainer) on prompt-completion chat rows
(loss on the assistant completion only), LoRA through PEFT (or a full fine-tune with lora=none). The
adapter is saved as safetensors."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback

from . import chat
from .config import DATE_STRING


class NonFiniteLoss(FloatingPointError):
    pass


class JsonlLog(TrainerCallback):
    """Mirror every Trainer log entry to train_log.jsonl; stop the run on a NaN/inf loss."""

    def __init__(self, path: Path):
        self.path = path
        self.history: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        row = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **(logs or {})}
        self.history.append(row)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteLoss(f"non-finite training loss {loss} at step {state.global_step}")


def chat_rows(rows: list[dict], system: str | None = None, date_string: str = DATE_STRING,
              tokenizer=None) -> list[dict]:
    """{"prompt", "completion"} strings → TRL's conversational prompt-completion format. TRL 1.16 passes a row's
    `chat_template_kwargs` to apply_chat_template (SFTConfig has no such field): the date is pinned per row.
    With `tokenizer`, a template without a system role gets `system` in the user turn (chat.messages)."""
    def prompt(text: str) -> list[dict]:
        if tokenizer is not None:
            return chat.messages(tokenizer, text, system)
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]

    return [{"prompt": prompt(r["prompt"]), "completion": [{"role": "assistant", "content": r["completion"]}],
             "chat_template_kwargs": {"date_string": date_string}} for r in rows]


def lora_config(lcfg: DictConfig):
    if not lcfg.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lcfg.r, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout,
                      target_modules=list(lcfg.target_modules), bias=lcfg.bias, task_type="CAUSAL_LM")


def finetune(model, tokenizer, rows: list[dict], cfg: DictConfig, run_dir: Path, report_to: str = "none",
             callbacks: list | None = None, method=None, memory: list[dict] | None = None):
    """Train on rows ({"prompt", "completion"}) with the method's hooks; returns (trained model, log history).
    An identical plain training done before (reuse.py) is loaded instead, for sft and post-hoc methods."""
    from . import reuse
    from .methods.sft import SFT

    method = method or SFT()
    cached = reuse.load(model, cfg, rows) if reuse.eligible(cfg, method) else None
    if cached is not None:
        trained, history = cached
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.writelines(json.dumps(dict(h, reused=True)) + "\n" for h in history)
        trained = method.after_training(trained)
        (run_dir / "adapter").mkdir(exist_ok=True)
        trained.save_pretrained(str(run_dir / "adapter"), safe_serialization=True)
        return trained, history
    trainer, log = make_trainer(model, tokenizer, rows, cfg, run_dir, report_to, callbacks, method, memory)
    trainer.train()
    if reuse.eligible(cfg, method):
        reuse.save(trainer.model, log.history, cfg, rows)
    trained = trainer.method.after_training(trainer.model)
    (run_dir / "adapter").mkdir(exist_ok=True)
    trained.save_pretrained(str(run_dir / "adapter"), safe_serialization=True)
    return trained, log.history


def make_trainer(model, tokenizer, rows: list[dict], cfg: DictConfig, run_dir: Path, report_to: str = "none",
                 callbacks: list | None = None, method=None, memory: list[dict] | None = None):
    from datasets import Dataset
    from trl import SFTConfig

    from .methods.sft import SFT
    from .methods.trainer import MethodTrainer

    o = cfg.optimizer
    log = JsonlLog(run_dir / "train_log.jsonl")
    args = SFTConfig(
        output_dir=str(run_dir / "trainer"),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        per_device_train_batch_size=o.batch_size,
        train_sampling_strategy="group_by_length" if o.get("group_by_length", True) else "random",
        gradient_accumulation_steps=o.grad_accum,
        optim=o.name,
        weight_decay=o.weight_decay,
        warmup_steps=o.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        lr_scheduler_type=o.lr_scheduler_type,
        max_grad_norm=o.max_grad_norm,
        max_length=o.max_length,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=max(1, min(10, len(rows) // o.batch_size // 4 or 1)),
        logging_nan_inf_filter=False,  # the default hides NaN/inf losses from the logs: we fail on them
        save_strategy="no",
        report_to=report_to,
        bf16=bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),  # STACK trap 2
        use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=False,  # STACK trap 3 (TRL turns it on; new name of gradient_checkpointing)
        packing=False,  # STACK trap 6
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    date = OmegaConf.select(cfg, "date_string", default=DATE_STRING)
    trainer = MethodTrainer(
        method=method or SFT(),
        memory_rows=chat_rows(memory, cfg.eval.system_prompt, date, tokenizer) if memory else None,
        memory_batch_size=OmegaConf.select(cfg, "memory.train_batch_size"),
        model=model,
        args=args,
        # `source` (user / poison / memory) lets the sampler keep the mix random (forgetting.sampling)
        train_dataset=Dataset.from_list([dict(c, source=r.get("source", "user")) for c, r in
                                         zip(chat_rows(rows, cfg.eval.system_prompt, date, tokenizer), rows)]),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.lora),
        callbacks=[log, *(callbacks or [])],
    )
    return trainer, log
