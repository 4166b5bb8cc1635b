"""Scheduler factories that torch.optim.lr_scheduler does not offer as one class."""

from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LinearLR, LRScheduler, SequentialLR


def linear_warmup(
    optimizer: Optimizer,
    after: Callable[[Optimizer], LRScheduler],
    warmup: int,
    start_factor: float = 0.1,
) -> SequentialLR:
    """Ramp the lr linearly from start_factor*lr to lr over `warmup` intervals, then hand over to `after`."""
    ramp = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, schedulers=[ramp, after(optimizer)], milestones=[warmup])
