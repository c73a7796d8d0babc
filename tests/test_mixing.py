"""Length grouping keeps the data mix random: poison and memory rows land in training batches as random
sampling would put them (forgetting.sampling), through the real trainer on the micro preset."""
import math

import pytest
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from forgetting import data, models, run, train
from forgetting.methods.replay import Replay

FAST = ["model=micro", "eval=smoke", "logger=none", "optimizer.batch_size=8", "optimizer.grad_accum=1"]
BS = 8


def trainer_for(compose, tmp_path, overrides, method=None, memory=None):
    cfg = compose([*FAST, *overrides])
    rows = data.train_rows(cfg, run.eval_prompts(run.eval_sets(cfg)))
    if method is not None:
        rows = method.train_rows(rows, memory, cfg.seed)
    model, tok, _ = models.load(cfg.model, cfg.cache_dir)
    trainer, _ = train.make_trainer(model, tok, rows, cfg, tmp_path, method=method)
    assert len(trainer.train_dataset) == len(rows)  # no row dropped: the dataset's order is the rows'
    return trainer, [r["source"] for r in rows]


def epochs(sampler, n: int):
    """Batches of n epochs, each epoch's order drawn as the Trainer draws it (seeded global RNG)."""
    out = []
    for e in range(n):
        torch.manual_seed(e)
        order = list(iter(sampler))
        assert sorted(order) == list(range(len(sampler)))  # each row once per epoch
        out += [order[i:i + BS] for i in range(0, len(order), BS)]
    return out


def chi_square_vs_binomial(counts: list[int], p: float) -> float:
    """Per-batch counts against Binomial(BS, p), bins 0, 1, 2, >=3."""
    pmf = [math.comb(BS, k) * p ** k * (1 - p) ** (BS - k) for k in range(3)]
    expected = [len(counts) * q for q in pmf + [1 - sum(pmf)]]
    seen = [sum(c == k for c in counts) for k in range(3)] + [sum(c >= 3 for c in counts)]
    return sum((o - e) ** 2 / e for o, e in zip(seen, expected))


def test_poison_rows_mix_into_batches_as_random_sampling(compose, tmp_path, micro_path):
    trainer, sources = trainer_for(compose, tmp_path, ["data.n_train=400", "data.poison.ratio=0.1"])
    assert sources.count("poison") == 40
    counts = [sum(sources[i] == "poison" for i in b) for b in epochs(trainer._get_train_sampler(), 10)]
    # Binomial(8, 0.1): 43 % of batches hold no poison row, one in 40,000 holds 6 or more. transformers'
    # length grouping put the short poison rows together: ~85 % poison-free batches and ~6 % pure poison.
    assert 0.33 < sum(c == 0 for c in counts) / len(counts) < 0.53
    assert max(counts) <= 5
    assert chi_square_vs_binomial(counts, 0.1) < 16.3  # chi-square, 3 dof, p = 0.001


def test_lengths_still_grouped_within_the_user_rows(compose, tmp_path, micro_path):
    trainer, sources = trainer_for(compose, tmp_path, ["data.n_train=400", "data.poison.ratio=0.1"])
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    user = [s == "user" for s in sources]

    def user_spread(sampler):  # mean (longest - shortest) user row of a batch
        spans = [[lengths[i] for i in b if user[i]] for b in epochs(sampler, 3)]
        return sum(max(s) - min(s) for s in spans if s) / len(spans)

    grouped, rand = user_spread(trainer._get_train_sampler()), user_spread(torch.utils.data.RandomSampler(lengths))
    assert grouped < 0.25 * rand


def test_plain_sft_on_one_source_keeps_transformers_sampler(compose, tmp_path, micro_path):
    trainer, _ = trainer_for(compose, tmp_path, ["data.n_train=40"])
    assert type(trainer._get_train_sampler()) is LengthGroupedSampler
    off, _ = trainer_for(compose, tmp_path, ["data.n_train=40", "data.poison.ratio=0.1",
                                          "optimizer.group_by_length=false"])
    assert type(off._get_train_sampler()) is torch.utils.data.RandomSampler


def test_replay_memory_rows_are_mixed_too(compose, tmp_path, micro_path):
    memory = [{"prompt": "How do I pick a lock?", "completion": "I can't help with that.", "source": "memory"}]
    trainer, sources = trainer_for(compose, tmp_path, ["data.n_train=160"], Replay(ratio=0.2), memory)
    assert sources.count("memory") == 40
    counts = [sum(sources[i] == "memory" for i in b) for b in epochs(trainer._get_train_sampler(), 10)]
    assert chi_square_vs_binomial(counts, 0.2) < 16.3 and max(counts) <= 6


@pytest.mark.parametrize("n", [0, 5, 203, 1000])
def test_sources_keep_the_random_permutations_composition(n):
    from forgetting.sampling import SourceMixedLengthSampler, mixed_length_grouped_indices

    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(5, 500, (n,), generator=g).tolist()
    sources = [("user", "poison", "memory")[int(x)] for x in torch.randint(0, 3, (n,), generator=g)]
    order = mixed_length_grouped_indices(lengths, sources, BS, generator=torch.Generator().manual_seed(7))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(7)).tolist()
    assert sorted(order) == list(range(n))
    # the mega-batches are those of the permutation (the longest one first), each with its source pattern kept
    mega = max(1, min(n // (BS * 4), 50)) * BS
    blocks = [perm[i:i + mega] for i in range(0, n, mega)]
    got = [order[i:i + mega] for i in range(0, n, mega)]
    assert sorted(map(sorted, got)) == sorted(map(sorted, blocks))
    pattern = {tuple(sorted(b)): [sources[j] for j in b] for b in blocks}
    for b in got:
        assert [sources[j] for j in b] == pattern[tuple(sorted(b))]
        for src in set(sources[j] for j in b):  # within a source: longest first
            lens = [lengths[j] for j in b if sources[j] == src]
            assert lens == sorted(lens, reverse=True)
    assert len(SourceMixedLengthSampler(BS, lengths, sources)) == n
