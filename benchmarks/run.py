"""`make bench`: speed ratios measured in one run on this machine (not unit tests).

1. batched greedy generation (length-sorted, left-padded) vs one prompt at a time
2. generation with the KV cache vs without
3. one LoRA SFT step in fp32 vs bf16 autocast on CPU (why bf16 is off on CPU, STACK trap 2)
Preset: --preset tiny (default) or micro.
"""
import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from forgetting import env  # noqa: E402

env.setup()
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from forgetting import data, models  # noqa: E402
from forgetting.generate import generate  # noqa: E402


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=48)
    a = ap.parse_args()
    mcfg = OmegaConf.load(Path(__file__).resolve().parents[1] / f"conf/model/{a.preset}.yaml")
    model, tok, path = models.load(mcfg)
    rows = data.ailuminate("pkg://ailuminate/airr_official_1.0_demo_en_us_prompt_set_release.csv")
    prompts = [r["prompt_text"] for r in rows[: a.n]]
    print(f"preset {a.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params), "
          f"{a.n} prompts, max {a.tokens} new tokens, {torch.get_num_threads()} threads")

    t_batch, _ = timed(lambda: generate(model, tok, prompts, a.tokens, 32))
    t_one, _ = timed(lambda: generate(model, tok, prompts, a.tokens, 1))
    print(f"generation  batch 32: {t_batch:6.2f} s   batch 1: {t_one:6.2f} s   speed-up x{t_one / t_batch:.1f}")

    model.generation_config.use_cache = False
    t_nocache, _ = timed(lambda: generate(model, tok, prompts, a.tokens, 32))
    model.generation_config.use_cache = True
    print(f"generation  KV cache: {t_batch:6.2f} s   no cache: {t_nocache:6.2f} s   speed-up x{t_nocache / t_batch:.1f}")

    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                            task_type="CAUSAL_LM"))
    batch = tok(prompts[:8], return_tensors="pt", padding=True, truncation=True, max_length=128)
    opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=1e-4)

    def step(bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = peft(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    step(False), step(True)  # warm-up
    t32, _ = timed(lambda: step(False), repeat=5)
    t16, _ = timed(lambda: step(True), repeat=5)
    print(f"SFT step    fp32: {t32 * 1e3:6.1f} ms   bf16 autocast: {t16 * 1e3:6.1f} ms   fp32 faster x{t16 / t32:.1f}")


if __name__ == "__main__":
    main()
