"""Poison rows per training batch under each sampler, against Binomial(batch, ratio) (random mixing).

The default data: GSM8K user rows with AdvBench poison at data.poison.ratio=0.1, 1000 rows, batch 8; token
lengths from the preset's tokenizer through the real trainer (train.make_trainer). Samplers:
  before  transformers' LengthGroupedSampler (optimizer.group_by_length before forgetting.sampling)
  after   what MethodTrainer uses now (forgetting.sampling: length grouping within a source only)
  random  RandomSampler (optimizer.group_by_length=false)
Also prints the padding share of the batches (the cost length grouping saves) and the poison tokens' share
of the loss tokens, averaged over batches (each batch's loss is normalised by its own token count).

    python benchmarks/batch_mix.py [--preset micro] [--epochs 20] [--ratio 0.1] [--batch 8] [--rows 1000]
"""
import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from forgetting import env  # noqa: E402

env.setup()
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from torch.utils.data import RandomSampler  # noqa: E402
from transformers.trainer_pt_utils import LengthGroupedSampler  # noqa: E402


def compose(overrides):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from forgetting.config import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hcompose("config", overrides=overrides)


def batches(sampler, n_epochs: int, bs: int):
    out = []
    for epoch in range(n_epochs):
        torch.manual_seed(epoch)  # the Trainer seeds the global RNG the samplers draw from
        order = list(iter(sampler))
        out += [order[i:i + bs] for i in range(0, len(order), bs)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="micro")
    ap.add_argument("--epochs", type=int, default=20, help="sampler epochs (seeds) pooled in the histograms")
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rows", type=int, default=1000)
    a = ap.parse_args()

    from forgetting import data, models, run, train

    cfg = compose([f"model={a.preset}", "logger=none", f"data.n_train={a.rows}", f"data.poison.ratio={a.ratio}",
                   f"optimizer.batch_size={a.batch}", "optimizer.grad_accum=1"])
    rows = data.train_rows(cfg, run.eval_prompts(run.eval_sets(cfg)))
    model, tok, _ = models.load(cfg.model, cfg.cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _ = train.make_trainer(model, tok, rows, cfg, Path(tmp))
    ds = trainer.train_dataset
    lengths = [len(x) for x in ds["input_ids"]]
    loss_tokens = [sum(t != -100 for t in x) for x in ds["labels"]]
    poison = [s == "poison" for s in ds["source"]]
    n_poison = sum(poison)
    samplers = {"before": LengthGroupedSampler(a.batch, lengths=lengths),
                "after": trainer._get_train_sampler(), "random": RandomSampler(range(len(lengths)))}
    print(f"{len(rows)} rows ({n_poison} poison, {a.preset} tokenizer), batch {a.batch}, {a.epochs} epochs pooled; "
          f"after = {type(samplers['after']).__name__}")
    p = n_poison / len(rows)
    hist, stats = {}, {}
    for name, s in samplers.items():
        bb = [b for b in batches(s, a.epochs, a.batch) if len(b) == a.batch]
        counts = [sum(poison[i] for i in b) for b in bb]
        hist[name] = [counts.count(k) for k in range(a.batch + 1)]
        pad = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bb)
        share = [sum(loss_tokens[i] for i in b if poison[i]) / sum(loss_tokens[i] for i in b) for b in bb]
        stats[name] = (pad / sum(max(lengths[i] for i in b) * len(b) for b in bb), sum(share) / len(share), len(bb))
    n = stats["after"][2]
    binom = [n * math.comb(a.batch, k) * p ** k * (1 - p) ** (a.batch - k) for k in range(a.batch + 1)]
    print(f"\npoison rows per batch: number of batches (of {n}); Binomial({a.batch}, {p:g}) expectation")
    print(f"{'k':>3} {'before':>8} {'after':>8} {'random':>8} {'Binomial':>9}")
    for k in range(a.batch + 1):
        print(f"{k:>3} {hist['before'][k]:>8} {hist['after'][k]:>8} {hist['random'][k]:>8} {binom[k]:>9.1f}")
    chi = {name: sum((h[k] - binom[k]) ** 2 / binom[k] for k in range(a.batch + 1) if binom[k] >= 5)
           for name, h in hist.items()}
    print("\nchi-square vs Binomial (bins with expectation >= 5): "
          + ", ".join(f"{k} {v:.1f}" for k, v in chi.items()))
    tok_share = sum(loss_tokens[i] for i in range(len(rows)) if poison[i]) / sum(loss_tokens)
    print("poison share of the loss (mean over batches of its share of loss tokens): "
          + ", ".join(f"{k} {v[1]:.3f}" for k, v in stats.items()) + f"; of all loss tokens {tok_share:.3f}")
    print("padding share of batch tokens: " + ", ".join(f"{k} {v[0]:.3f}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
