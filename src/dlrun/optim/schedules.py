"""The book's learning-rate schedules (11.11) as torch LambdaLR schedulers.

t counts the scheduler's intervals taken so far (epochs with `sched.interval=epoch`, optimizer updates with
`step`), and interval t trains at lr(t); lr0 is the optimizer's lr (`optim.lr`). The book's multi-factor
schedule is torch's MultiStepLR (conf/sched/multistep.yaml).

The book sets lr(t) *after* epoch t, so its epoch t + 1 trains at lr(t) and its first epoch at the
optimizer's lr; dlrun starts the schedule with the first interval.
"""

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from dlrun.errors import DlrunError


def _per_group(optimizer: Optimizer, lr: Callable[[float, int], float]) -> LambdaLR:
    """A LambdaLR giving each parameter group lr(lr0, t) (LambdaLR multiplies lr0 by a factor)."""
    bases = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    if any(base <= 0 for base in bases):
        raise DlrunError(f"optim.lr={bases[0]} must be > 0 for a learning-rate schedule")
    factors = [lambda t, base=base: lr(base, t) / base for base in bases]
    return LambdaLR(optimizer, factors)


def square_root(optimizer: Optimizer) -> LambdaLR:
    """The book's SquareRootScheduler: lr(t) = lr0 (t + 1)^(-1/2)."""
    return _per_group(optimizer, lambda lr0, t: lr0 * (t + 1.0) ** -0.5)


def factor(optimizer: Optimizer, factor: float, min_lr: float = 1e-7) -> LambdaLR:
    """The book's FactorScheduler: lr(t) = max(min_lr, lr0 factor^t), a geometric decay with a floor."""
    if not 0 < factor <= 1:
        raise DlrunError(f"sched.scheduler.factor={factor} must lie in (0, 1]")
    if not min_lr >= 0:
        raise DlrunError(f"sched.scheduler.min_lr={min_lr} must be >= 0")
    return _per_group(optimizer, lambda lr0, t: max(min_lr, lr0 * factor**t))


def cosine(
    optimizer: Optimizer,
    max_update: int,
    final_lr: float = 0.0,
    warmup: int = 0,
    warmup_begin_lr: float = 0.0,
) -> LambdaLR:
    """The book's CosineScheduler: after `warmup` intervals, lr(t) = final + (lr0 - final)
    (1 + cos(pi (t - warmup) / (max_update - warmup))) / 2 up to t = max_update, then final.

    Warm-up: interval t < warmup trains at warmup_begin_lr + (lr0 - warmup_begin_lr) (t + 1) / warmup, the
    book's linear ramp taken at the end of each interval. The book's ramp at t (not t + 1) starts at
    warmup_begin_lr = 0: a first interval that does not train at all."""
    if not 0 <= warmup < max_update:
        raise DlrunError(
            f"sched.scheduler.warmup={warmup}, max_update={max_update}: need 0 <= warmup < max_update"
        )
    if not (final_lr >= 0 and warmup_begin_lr >= 0):
        raise DlrunError(
            f"sched.scheduler.final_lr={final_lr}, warmup_begin_lr={warmup_begin_lr} must be >= 0"
        )
    steps = max_update - warmup

    def lr(lr0: float, t: int) -> float:
        if t < warmup:
            return warmup_begin_lr + (lr0 - warmup_begin_lr) * (t + 1) / warmup
        if t <= max_update:
            return final_lr + (lr0 - final_lr) * (1 + math.cos(math.pi * (t - warmup) / steps)) / 2
        return final_lr

    return _per_group(optimizer, lr)
