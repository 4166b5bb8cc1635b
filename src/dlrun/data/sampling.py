"""Batches of indices, reshuffled per epoch from (seed, epoch) alone.

No sampler state needs saving: a resumed run sees exactly the order an uninterrupted one would, and
`skip` starts an epoch part-way through. Each rank of a data-parallel run takes its own slice.
"""

import math

import torch


class EpochBatchSampler:
    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        epoch: int = 0,
        skip: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.skip = skip
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size

    def _indices(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            indices = torch.randperm(self.num_examples, generator=generator)
        else:
            indices = torch.arange(self.num_examples)
        return indices[self.rank :: self.world_size]

    def __len__(self) -> int:
        per_rank = math.ceil((self.num_examples - self.rank) / self.world_size)
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def __iter__(self):
        indices = self._indices()
        for b in range(self.skip, len(self)):
            yield indices[b * self.batch_size : (b + 1) * self.batch_size]
