"""Datasets small enough to live in memory as tensors, batched by indexing: no per-sample Python work."""

import copy
from collections.abc import Callable

import torch
from torch import Tensor

from dlrun.data.sampling import EpochBatchSampler
from dlrun.errors import DlrunError


class TensorBatches:
    """Iterates (x, y) batches of in-memory tensors; `transform` runs on whole batches on the device."""

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        sampler: EpochBatchSampler,
        device: torch.device,
        transform: Callable[[Tensor], Tensor] | None = None,
    ):
        self.x, self.y, self.sampler, self.device, self.transform = x, y, sampler, device, transform

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        non_blocking = self.device.type == "cuda"
        for idx in self.sampler:
            idx = idx.to(self.x.device)
            x = self.x[idx].to(self.device, non_blocking=non_blocking)
            y = self.y[idx].to(self.device, non_blocking=non_blocking)
            yield (self.transform(x) if self.transform else x), y


class InMemoryData:
    """Base of the in-memory data modules: subclasses fill x_train, y_train, x_val, y_val in __init__."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor

    def __init__(
        self,
        batch_size: int,
        val_batch_size: int | None = None,
        on_device: bool = False,
        drop_last: bool = False,
    ):
        if batch_size < 1:
            raise DlrunError(f"data.batch_size={batch_size} must be >= 1")
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.on_device = on_device
        self.drop_last = drop_last
        self.device = torch.device("cpu")
        self.seed = 0
        self.rank, self.world_size = 0, 1

    def transform(self, x: Tensor) -> Tensor:
        return x

    def setup(self, device: torch.device, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        """Under DDP (world_size > 1) batch_size stays the global batch: each rank takes its share of it
        (the engine's Distributed.setup_data checks that it divides evenly, for every data module)."""
        self.device, self.seed, self.rank, self.world_size = device, seed, rank, world_size
        if self.on_device:
            for name in ("x_train", "y_train", "x_val", "y_val"):
                setattr(self, name, getattr(self, name).to(device))
        elif device.type == "cuda":
            for name in ("x_train", "y_train", "x_val", "y_val"):
                setattr(self, name, getattr(self, name).pin_memory())

    def kfold_pool(self) -> tuple[Tensor, Tensor]:
        """The labelled examples K-fold splits: all of them where a subclass keeps them as x_all/y_all."""
        if hasattr(self, "x_all"):
            return self.x_all, self.y_all
        return self.x_train, self.y_train

    def fold(self, k: int, num_folds: int, seed: int = 0) -> "InMemoryData":
        """A copy of this data module that trains on all folds but the k-th and validates on the k-th.

        The split is a seeded permutation of the pool cut into num_folds nearly equal parts: every example
        is validated exactly once over the K folds, and the same seed gives the same folds."""
        x, y = self.kfold_pool()
        if not 2 <= num_folds <= len(y):
            raise DlrunError(f"trainer.kfold={num_folds} needs 2 <= K <= {len(y)} (the number of examples)")
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        parts = order.tensor_split(num_folds)
        val_idx = parts[k]
        train_idx = torch.cat([p for i, p in enumerate(parts) if i != k])
        folded = copy.copy(self)
        folded.x_train, folded.y_train = x[train_idx], y[train_idx]
        folded.x_val, folded.y_val = x[val_idx], y[val_idx]
        return folded

    def refit(self) -> "InMemoryData":
        """A copy that trains on the whole pool (validation stays as it was)."""
        refit = copy.copy(self)
        refit.x_train, refit.y_train = self.kfold_pool()
        return refit

    def train_loader(self, epoch: int = 0, skip: int = 0) -> TensorBatches:
        sampler = EpochBatchSampler(
            len(self.y_train),
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            epoch=epoch,
            skip=skip,
            drop_last=self.drop_last,
            rank=self.rank,
            world_size=self.world_size,
        )
        return TensorBatches(self.x_train, self.y_train, sampler, self.device, self.transform)

    def val_loader(self) -> TensorBatches:
        # Under DDP each rank validates its shard, no example twice; the trainer sums the ranks' metrics.
        sampler = EpochBatchSampler(
            len(self.y_val), self.val_batch_size, shuffle=False, rank=self.rank, world_size=self.world_size
        )
        return TensorBatches(self.x_val, self.y_val, sampler, self.device, self.transform)
