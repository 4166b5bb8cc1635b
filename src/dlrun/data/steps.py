"""No data: an epoch of `steps` empty batches, for models that are their own problem (the 2-D toys)."""

from typing import Annotated

from dlrun.data.base import DataModule
from dlrun.ranges import Min


class EmptyBatches:
    """`steps` empty batches, the first `skip` left out; len() counts them all (the engine's contract)."""

    def __init__(self, steps: int, skip: int = 0):
        self.steps, self.skip = steps, skip

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return iter([()] * max(self.steps - self.skip, 0))


class StepsData(DataModule):
    """`steps` optimizer updates an epoch and nothing to validate on."""

    def __init__(self, steps: Annotated[int, Min(1)] = 20):
        super().__init__(batch_size=1)
        self.steps = steps

    def train_loader(self, epoch: int = 0, skip: int = 0) -> EmptyBatches:
        return EmptyBatches(self.steps, skip)

    def val_loader(self) -> list:
        return []
