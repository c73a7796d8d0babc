"""Length grouping that keeps the data mix random: training rows of several sources (user / poison / memory)
land in batches as random sampling would put them; lengths are grouped only within a source."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


def mixed_length_grouped_indices(lengths: list[int], sources: list[str], batch_size: int,
                                 mega_batch_mult: int | None = None, generator=None) -> list[int]:
    """A random permutation, cut into mega-batches as transformers' get_length_grouped_indices does; inside
    each mega-batch the rows of one source are sorted by length (longest first) and put back into that
    source's own positions. Which source fills which position is left as the permutation drew it, so each
    batch's source counts are exactly a random sampler's (poison per batch ~ hypergeometric ~ Binomial), while
    the user rows of a batch still have similar lengths. Chosen over interleaving per-source streams because it
    cannot change the mix by construction."""
    n = len(lengths)
    if len(sources) != n:
        raise ValueError(f"{len(sources)} sources for {n} rows")
    if mega_batch_mult is None:  # transformers' default: 50, or 4 mega-batches for a small set
        mega_batch_mult = max(1, min(n // (batch_size * 4), 50))
    perm = torch.randperm(n, generator=generator).tolist()
    size = mega_batch_mult * batch_size
    megas = []
    for start in range(0, n, size):
        block = perm[start:start + size]
        slots: dict[str, list[int]] = {}
        for pos, i in enumerate(block):
            slots.setdefault(sources[i], []).append(pos)
        for positions in slots.values():
            rows = sorted((block[p] for p in positions), key=lambda i: -lengths[i])
            for p, i in zip(positions, rows):
                block[p] = i
        megas.append(block)
    if not megas:
        return []
    # the mega-batch holding the longest row goes first, so an out-of-memory error comes early (as transformers)
    longest = max(range(len(megas)), key=lambda m: max(lengths[i] for i in megas[m]))
    megas[0], megas[longest] = megas[longest], megas[0]
    return [i for block in megas for i in block]


class SourceMixedLengthSampler(Sampler):
    """transformers' LengthGroupedSampler with the sources mixed as random sampling mixes them."""

    def __init__(self, batch_size: int, lengths: list[int], sources: list[str], generator=None):
        self.batch_size, self.lengths, self.sources, self.generator = batch_size, list(lengths), list(sources), generator

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        return iter(mixed_length_grouped_indices(self.lengths, self.sources, self.batch_size,
                                                 generator=self.generator))


def source_mixed_sampler(trainer):
    """For MethodTrainer._get_train_sampler: this sampler when length grouping is on and the training rows
    (train.make_trainer's `source` column) come from several sources; None otherwise (transformers' own,
    e.g. plain SFT on the user's rows keeps its LengthGroupedSampler)."""
    ds = trainer.train_dataset
    if trainer.args.train_sampling_strategy != "group_by_length" or "source" not in getattr(ds, "column_names", ()):
        return None
    sources = list(ds["source"])
    if len(set(sources)) < 2:
        return None
    return SourceMixedLengthSampler(trainer.args.train_batch_size * trainer.args.gradient_accumulation_steps,
                                    [len(x) for x in ds["input_ids"]], sources)
