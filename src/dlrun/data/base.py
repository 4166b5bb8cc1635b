"""The shared part of dlrun's data modules: batch sizes, where setup() puts things, and the epoch samplers
(dlrun.engine.contracts.DataModule is the contract this implements)."""

import torch

from dlrun.data.sampling import EpochBatchSampler
from dlrun.errors import DlrunError


class DataModule:
    """Subclasses fill their data in __init__ and implement train_loader and val_loader, usually over
    `train_sampler` and `val_sampler`; `model_kwargs` and `checkpoint_state` default to nothing."""

    def __init__(self, batch_size: int, val_batch_size: int | None = None, drop_last: bool = False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DlrunError(f"data.batch_size={batch_size!r} must be a whole number >= 1")
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.drop_last = drop_last
        self.model_kwargs: dict = {}
        self.device = torch.device("cpu")
        self.seed, self.rank, self.world_size = 0, 0, 1

    def setup(self, device: torch.device, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        """Under DDP (world_size > 1) batch_size stays the global batch: each rank takes its share of it
        (the engine's Distributed.setup_data checks that it divides evenly)."""
        self.device, self.seed, self.rank, self.world_size = device, seed, rank, world_size

    def train_sampler(self, num_examples: int, epoch: int, skip: int) -> EpochBatchSampler:
        """The epoch's shuffled batches of indices, from (seed, epoch) alone; this rank's share."""
        return EpochBatchSampler(
            num_examples,
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            epoch=epoch,
            skip=skip,
            drop_last=self.drop_last,
            rank=self.rank,
            world_size=self.world_size,
        )

    def val_sampler(self, num_examples: int) -> EpochBatchSampler:
        """In order; under DDP each rank validates its shard, no example twice."""
        return EpochBatchSampler(
            num_examples, self.val_batch_size, shuffle=False, rank=self.rank, world_size=self.world_size
        )

    def train_loader(self, epoch: int = 0, skip: int = 0):
        raise NotImplementedError

    def val_loader(self):
        raise NotImplementedError

    def checkpoint_state(self) -> dict | None:
        """What the weights mean beyond the model config (a vocabulary); saved in every checkpoint."""
        return None
