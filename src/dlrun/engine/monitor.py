"""The monitored metric: which epoch is best (best.ckpt, sweepers) and when to stop early, in one direction.

Early stopping watches the trainer's monitor unless told otherwise; its mode follows the metric it watches:
the trainer's mode for the trainer's metric, else a direction read from the metric's name (accuracy-like names
rise, everything else falls), unless `mode` is given.
"""

from dataclasses import dataclass

from dlrun.errors import DlrunError

MODES = ("min", "max")
# Metrics that are better when larger; every other metric (losses, perplexity, errors) is better smaller.
RISING = ("acc", "accuracy", "bleu", "f1", "map", "auc", "r2", "precision", "recall", "iou", "miou")


def mode_of(metric: str) -> str:
    name = metric.rsplit("/", 1)[-1].lower()
    return "max" if name in RISING or name.startswith(("acc", "map")) else "min"


def check_mode(mode: str, key: str) -> str:
    if mode not in MODES:
        raise DlrunError(f"{key}={mode!r}; use min or max")
    return mode


def logged(metric: str, metrics: dict, key: str) -> float:
    if metric not in metrics:
        names = ", ".join(sorted(k for k in metrics if "/" in k))
        raise DlrunError(f"{key}={metric!r} is not logged; available: {names}")
    return metrics[metric]


@dataclass
class Monitor:
    """`metric` None: no best epoch (best.ckpt is not written; last.ckpt still is)."""

    metric: str | None = "val/loss"
    mode: str = "min"

    def __post_init__(self):
        check_mode(self.mode, "trainer.monitor_mode")

    def better(self, value: float, than: float, min_delta: float = 0.0) -> bool:
        return value > than + min_delta if self.mode == "max" else value < than - min_delta

    def update(self, best: dict | None, epoch: int, metrics: dict) -> tuple[dict | None, bool]:
        """(the best epoch's metrics after this epoch, whether this epoch is the new best)."""
        if self.metric is None:
            return best, False
        value = logged(self.metric, metrics, "trainer.monitor")
        if best is None or self.better(value, best[self.metric]):
            return {"epoch": epoch} | metrics, True
        return best, False


@dataclass
class EarlyStopping:
    monitor: str | None = None  # e.g. val/loss; None: never stop early
    mode: str | None = None  # None: follow the metric (see the module docstring)
    patience: int = 3
    min_delta: float = 0.0

    def __post_init__(self):
        if self.mode is not None:
            check_mode(self.mode, "trainer.early_stopping.mode")
        if self.patience < 1:
            raise DlrunError(f"trainer.early_stopping.patience={self.patience} must be >= 1")

    def watching(self, trainer_monitor: Monitor) -> Monitor | None:
        """The metric and direction this rule watches, given the trainer's monitor."""
        if self.monitor is None:
            return None
        mode = self.mode
        if mode is None:
            mode = trainer_monitor.mode if self.monitor == trainer_monitor.metric else mode_of(self.monitor)
        return Monitor(self.monitor, mode)

    def check(self, history: list[dict], trainer_monitor: Monitor | None = None) -> dict | None:
        """None to go on; else why to stop: the epoch, the best value and the epoch it was reached.
        Derived from the history alone, so there is nothing extra to checkpoint."""
        watched = self.watching(trainer_monitor or Monitor(self.monitor, self.mode or "min"))
        if watched is None or not history:
            return None
        logged(watched.metric, history[-1], "trainer.early_stopping.monitor")
        best, best_epoch, waited = None, None, 0
        for entry in history:
            if watched.metric not in entry:  # an epoch without validation
                continue
            value = entry[watched.metric]
            if best is None or watched.better(value, best, self.min_delta):
                best, best_epoch, waited = value, entry["epoch"], 0
            else:
                waited += 1
        if waited < self.patience:
            return None
        return {
            "epoch": history[-1]["epoch"],
            "monitor": watched.metric,
            "mode": watched.mode,
            "best": best,
            "best_epoch": best_epoch,
            "patience": self.patience,
        }

    def explain(self, stop: dict) -> str:
        return (
            f"early stopping at epoch {stop['epoch']}: {stop['monitor']} ({stop['mode']}) has not improved "
            f"by more than {self.min_delta:g} for {stop['patience']} epochs; best {stop['best']:.4g} at "
            f"epoch {stop['best_epoch']}"
        )
