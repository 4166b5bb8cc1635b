"""Datasets small enough to live in memory as tensors, batched by indexing: no per-sample Python work."""

import copy
from collections.abc import Callable

import torch
from torch import Tensor

from dlrun.data.augment import mix
from dlrun.data.base import DataModule
from dlrun.data.sampling import EpochBatchSampler
from dlrun.errors import DlrunError


class TensorBatches:
    """Iterates (x, y) batches of in-memory tensors; `transform` runs on whole batches on the device, then
    `augment(x, key)` (training batches: random; held-out: deterministic), the key derived from (seed,
    epoch, batch index, rank) alone, so a resumed run augments its batches as an uninterrupted one would."""

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        sampler: EpochBatchSampler,
        device: torch.device,
        transform: Callable[[Tensor], Tensor] | None = None,
        augment: Callable[[Tensor, int], Tensor] | None = None,
    ):
        self.x, self.y, self.sampler, self.device, self.transform = x, y, sampler, device, transform
        self.augment = augment

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        non_blocking = self.device.type == "cuda"
        s = self.sampler
        for index, idx in enumerate(s, start=s.skip):
            idx = idx.to(self.x.device)
            x = self.x[idx].to(self.device, non_blocking=non_blocking)
            y = self.y[idx].to(self.device, non_blocking=non_blocking)
            if self.transform:
                x = self.transform(x)
            if self.augment:
                x = self.augment(x, mix(s.seed, s.epoch, index, s.rank))
            yield x, y


class InMemoryData(DataModule):
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
        super().__init__(batch_size, val_batch_size, drop_last)
        self.on_device = on_device

    def transform(self, x: Tensor) -> Tensor:
        return x

    def train_augment(self, x: Tensor, key: int) -> Tensor:
        """Training batches only, after `transform`: random augmentation seeded by the batch's key."""
        return x

    def val_augment(self, x: Tensor, key: int) -> Tensor:
        """Held-out batches, after `transform`: the augmentation's deterministic part (e.g. Normalize)."""
        return x

    def setup(self, device: torch.device, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().setup(device, seed, rank, world_size)
        for name in ("x_train", "y_train", "x_val", "y_val"):
            tensor = getattr(self, name)
            check_finite(tensor, name)
            if self.on_device:
                setattr(self, name, tensor.to(device))
            elif device.type == "cuda":
                setattr(self, name, tensor.pin_memory())

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
        sampler = self.train_sampler(len(self.y_train), epoch, skip)
        return TensorBatches(
            self.x_train, self.y_train, sampler, self.device, self.transform, self.train_augment
        )

    def val_loader(self) -> TensorBatches:
        sampler = self.val_sampler(len(self.y_val))
        return TensorBatches(self.x_val, self.y_val, sampler, self.device, self.transform, self.val_augment)


def check_finite(tensor: Tensor, name: str) -> None:
    """Inf or NaN in the data (a CSV's 1e39 overflows float32 to inf) would show up much later as a
    non-finite loss, with advice to lower the lr: say so when the data is set up instead."""
    if tensor.is_floating_point():
        bad = (~torch.isfinite(tensor)).sum().item()
        if bad:
            raise DlrunError(
                f"the data's {name} holds {bad} non-finite value(s) (NaN, inf, or beyond float32's range "
                f"±3.4e38); clean or rescale the data"
            )
