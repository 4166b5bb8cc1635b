"""curves.png: the book's Animator plot (train/val loss and the main metric per epoch), drawn off-screen."""

import time
from pathlib import Path

from dlrun.atomic import replacing


def series_names(history: list[dict], main_metric: str) -> list[str]:
    """train/ and val/ losses (loss, loss_D, ...) and the monitored metric (val/acc: train/acc, val/acc)."""
    metric = main_metric.split("/", 1)[-1]
    keys = history[-1].keys() if history else []
    return [
        k
        for k in keys
        if k.split("/", 1)[0] in ("train", "val")
        and (k.split("/", 1)[-1] == metric or k.split("/", 1)[-1].split("_")[0] == "loss")
    ]


def plot_history(
    history: list[dict], path: Path, main_metric: str, log_scale: bool = False, title: str | None = None
) -> None:
    from matplotlib.figure import Figure  # Agg through the OO API: no display, no global pyplot state

    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    for name in series_names(history, main_metric):
        style = "-" if name.startswith("train/") else "--"
        ax.plot(epochs, [h.get(name, float("nan")) for h in history], style, label=name)
    ax.set_xlabel("epoch")
    if log_scale:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=9)
    with replacing(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)


class CurvePlotter:
    """Redraws curves.png at epoch ends, at most every `min_interval_s` seconds (and always at the end),
    so that runs made of many short epochs do not spend their time drawing."""

    def __init__(
        self,
        path: Path,
        main_metric: str,
        log_scale: bool = False,
        min_interval_s: float = 5.0,
        title: str | None = None,
    ):
        self.path, self.main_metric, self.log_scale = Path(path), main_metric, log_scale
        self.min_interval_s, self.title = min_interval_s, title
        # Counting from the start: a run shorter than min_interval_s draws once, after its last epoch.
        self.last_drawn = time.monotonic()

    def update(self, history: list[dict], final: bool = False) -> None:
        if not history or (not final and time.monotonic() - self.last_drawn < self.min_interval_s):
            return
        plot_history(history, self.path, self.main_metric, self.log_scale, self.title)
        self.last_drawn = time.monotonic()
