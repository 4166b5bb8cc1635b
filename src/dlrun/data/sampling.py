"""Batches of indices, reshuffled per epoch from (seed, epoch) alone.

No sampler state needs saving: a resumed run sees exactly the order an uninterrupted one would, and
`skip` starts an epoch part-way through.

Data parallel: `batch_size` is the global batch. Rank r of world_size takes every world_size-th index of
each global batch, starting at r, so the ranks' batches together are exactly the single-process batch. With
`pad` (training), an epoch whose size is not a multiple of world_size repeats its first few indices (as
torch's DistributedSampler does) so that every rank gets as many batches, and as many examples in each,
as the others: DDP needs the same number of steps everywhere, and equal shares make the mean of the ranks'
mean losses the mean over the global batch. Without `pad` (validation) no example is seen twice and a rank
may get one batch fewer. `pad` defaults to `shuffle` (training order pads, evaluation order does not).
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
        pad: bool | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pad = shuffle if pad is None else pad
        if pad and batch_size % world_size:
            raise ValueError(f"the global batch {batch_size} is not divisible by world_size {world_size}")
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.skip = skip
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.pad = pad and world_size > 1 and not drop_last

    def _indices(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            indices = torch.randperm(self.num_examples, generator=generator)
        else:
            indices = torch.arange(self.num_examples)
        if self.pad and self.num_examples % self.world_size:
            padded = math.ceil(self.num_examples / self.world_size) * self.world_size
            indices = indices.repeat(math.ceil(padded / self.num_examples))[:padded]
        return indices

    def __len__(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        if self.drop_last:
            return full
        if self.world_size == 1 or self.pad:
            return math.ceil(self.num_examples / self.batch_size)
        return full + (rest > self.rank)  # the short last batch may hold nothing for this rank

    def __iter__(self):
        for batch in self.global_batches():
            yield self.share(batch)

    def global_batches(self):
        """The batches of all ranks together: what one process would get."""
        indices = self._indices()
        for b in range(self.skip, len(self)):
            yield indices[b * self.batch_size : (b + 1) * self.batch_size]

    def share(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch."""
        return batch if self.world_size == 1 else batch[self.rank :: self.world_size]
