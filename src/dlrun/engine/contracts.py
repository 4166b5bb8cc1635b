"""What the engine asks of the parts it is given, written down.

- A data module (`DataModule` below; `dlrun.data.base.DataModule` implements the shared parts).
- A task (`dlrun.tasks.base.Task`): steps, metrics, optimizers and hooks, all with defaults.
- Hooks of tasks get the model and a `FitContext`: where the run writes, its logger and data, the epoch.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from dlrun.errors import DlrunError


@runtime_checkable
class DataModule(Protocol):
    """Batches for the engine.

    - `setup(device, seed, rank, world_size)`: once, before the first loader; under DDP `batch_size` is the
      global batch and each rank takes its share.
    - `train_loader(epoch, skip)`: the epoch's batches in an order derived from (seed, epoch) alone, the first
      `skip` left out (mid-epoch resume); `len()` counts every batch of the epoch, skipped ones included.
    - `val_loader()`: the held-out batches, in order (an empty list: nothing to validate on).
    - `model_kwargs`: constructor arguments the model can only learn from the data (a vocabulary's size).
    - `checkpoint_state()`: what the weights mean beyond the model config (a vocabulary), saved in every
      checkpoint; None when there is nothing.
    """

    model_kwargs: dict

    def setup(self, device: torch.device, seed: int = 0, rank: int = 0, world_size: int = 1) -> None: ...

    def train_loader(self, epoch: int = 0, skip: int = 0) -> Iterable: ...

    def val_loader(self) -> Iterable: ...

    def checkpoint_state(self) -> dict | None: ...


def check_data_module(data: Any) -> None:
    missing = [
        name
        for name in ("setup", "train_loader", "val_loader", "checkpoint_state")
        if not callable(getattr(data, name, None))
    ]
    if missing or not isinstance(getattr(data, "model_kwargs", None), dict):
        missing += [] if isinstance(getattr(data, "model_kwargs", None), dict) else ["model_kwargs"]
        raise DlrunError(
            f"{type(data).__name__} is not a data module (it lacks {', '.join(missing)}); "
            "subclass dlrun.data.base.DataModule"
        )


@dataclass
class FitContext:
    """What a task's hooks may use besides the model."""

    run_dir: Path
    logger: Any  # a dlrun.loggers.base.NullLogger-like logger
    data: Any  # the DataModule
    epoch: int = 0  # completed epochs
    is_main: bool = True  # rank 0 (the only process that writes files under DDP)
