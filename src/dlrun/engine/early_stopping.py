"""Early stopping, derived from the epoch history alone (nothing extra to checkpoint)."""

from dataclasses import dataclass

from dlrun.errors import DlrunError


@dataclass
class EarlyStopping:
    monitor: str | None = None  # e.g. val/loss; None: never stop early
    mode: str = "min"
    patience: int = 3
    min_delta: float = 0.0

    def __post_init__(self):
        if self.mode not in ("min", "max"):
            raise DlrunError(f"trainer.early_stopping.mode={self.mode!r}; use min or max")
        if self.patience < 1:
            raise DlrunError(f"trainer.early_stopping.patience={self.patience} must be >= 1")

    def check(self, history: list[dict]) -> dict | None:
        """None to go on; else why to stop: the epoch, the best value and the epoch it was reached."""
        if self.monitor is None or not history:
            return None
        if self.monitor not in history[-1]:
            raise DlrunError(
                f"trainer.early_stopping.monitor={self.monitor!r} is not logged; "
                f"available: {', '.join(sorted(k for k in history[-1] if '/' in k))}"
            )
        sign = 1.0 if self.mode == "min" else -1.0
        best, best_epoch, waited = None, None, 0
        for entry in history:
            value = sign * entry[self.monitor]
            if best is None or value < best - self.min_delta:
                best, best_epoch, waited = value, entry["epoch"], 0
            else:
                waited += 1
        if waited < self.patience:
            return None
        return {
            "epoch": history[-1]["epoch"],
            "monitor": self.monitor,
            "best": sign * best,
            "best_epoch": best_epoch,
            "patience": self.patience,
        }
