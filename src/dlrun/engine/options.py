"""The trainer's numeric options, checked once: a value that would silently train nothing, or train backwards,
is refused with one line naming the key."""

from dlrun.errors import DlrunError


def whole(value, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise DlrunError(f"{key}={value!r} must be a whole number")
    if value < minimum:
        raise DlrunError(f"{key}={value} must be >= {minimum}")
    return value


def batch_limit(value, key: str, minimum: int = 1) -> int | float:
    """An int (batches, >= minimum) or a float fraction in (0, 1]."""
    if isinstance(value, bool) or value is None:
        raise DlrunError(f"{key}={value!r} must be an int (batches) or a float in (0, 1] (a fraction)")
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise DlrunError(f"{key}={value} as a fraction must lie in (0, 1]; an int counts batches")
        return value
    return whole(value, key, minimum)


def limited(total: int, limit: int | float) -> int:
    if isinstance(limit, float):
        return max(1, int(total * limit)) if total else 0
    return min(total, limit)


def check_trainer_options(
    max_epochs,
    max_steps,
    limit_train_batches,
    limit_val_batches,
    accumulate,
    clip_val,
    clip_algorithm,
    log_every=50,
    val_every=1,
    checkpoint_every=None,
) -> dict:
    if clip_algorithm not in ("norm", "value"):
        raise DlrunError(f"trainer.gradient_clip_algorithm={clip_algorithm!r}; use norm or value")
    if clip_val is not None and (isinstance(clip_val, bool) or not float(clip_val) > 0):
        raise DlrunError(
            f"trainer.gradient_clip_val={clip_val} must be > 0 (a negative bound reverses the gradient, "
            "0 freezes training); null turns clipping off"
        )
    max_epochs = whole(max_epochs, "trainer.max_epochs", -1)
    max_steps = whole(max_steps, "trainer.max_steps", -1)
    if max_epochs < 1 and max_steps < 1:
        raise DlrunError("set trainer.max_epochs or trainer.max_steps to a positive number")
    return {
        "max_epochs": max_epochs if max_epochs > 0 else 2**31,
        "max_steps": max_steps,
        "limit_train_batches": batch_limit(limit_train_batches, "trainer.limit_train_batches"),
        "limit_val_batches": batch_limit(limit_val_batches, "trainer.limit_val_batches", 0),
        "accumulate": whole(accumulate, "trainer.accumulate_grad_batches", 1),
        "clip_val": None if clip_val is None else float(clip_val),
        "log_every": whole(log_every, "trainer.log_every_n_steps", 1),
        # Validation every n epochs (always at the last one); checkpoints at the same cadence unless told.
        "val_every": whole(val_every, "trainer.check_val_every_n_epoch", 1),
        "checkpoint_every": whole(
            val_every if checkpoint_every is None else checkpoint_every,
            "trainer.checkpoint_every_n_epochs",
            1,
        ),
    }
