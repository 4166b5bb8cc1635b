"""What a person sees: a live bar on a terminal, plain lines in logs and CI."""

import logging
import sys

from tqdm.auto import tqdm

log = logging.getLogger("dlrun")


def format_metrics(metrics: dict[str, float], prefix: str = "") -> str:
    parts = []
    for name, value in metrics.items():
        if name.startswith(prefix):
            parts.append(f"{name[len(prefix) :]} {value:.4g}")
    return " ".join(parts)


class Progress:
    def __init__(self, enabled: bool = True):
        self.live = enabled and sys.stderr.isatty()
        self.bar = None

    def start_epoch(self, epoch: int, max_epochs: int, total: int, initial: int = 0) -> None:
        if self.live:
            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=f"epoch {epoch}/{max_epochs}",
                unit="batch",
                leave=False,
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def show(self, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(format_metrics(metrics), refresh=False)

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def epoch_line(self, epoch: int, max_epochs: int, metrics: dict[str, float]) -> None:
        """`epoch 3/10 | train loss .. acc .. | val loss .. acc .. | 1234 ex/s | 2.0s` (no val part in epochs
        without validation)."""
        parts = [f"epoch {epoch:{len(str(max_epochs))}d}/{max_epochs}"]
        parts += [
            f"{split} {text}" for split in ("train", "val") if (text := format_metrics(metrics, f"{split}/"))
        ]
        parts.append(f"{metrics.get('throughput/train_examples_per_s', 0.0):.0f} ex/s")
        parts.append(f"{metrics.get('time/epoch_s', 0.0):.1f}s")
        log.info(" | ".join(parts))
