"""curves.png: the book's Animator plot (train/val loss and the main metric per epoch, the learning rate on a
second axis when a schedule changes it), drawn off-screen."""

import time
from pathlib import Path

from dlrun.atomic import replacing


def series_names(history: list[dict], main_metric: str) -> list[str]:
    """train/ and val/ losses (loss, loss_D, ...) and the monitored metric (val/acc: train/acc, val/acc)."""
    metric = main_metric.split("/", 1)[-1]
    keys = dict.fromkeys(k for h in history for k in h)  # validated epochs add val/ keys
    return [
        k
        for k in keys
        if k.split("/", 1)[0] in ("train", "val")
        and (k.split("/", 1)[-1] == metric or k.split("/", 1)[-1].split("_")[0] == "loss")
    ]


def points(history: list[dict], name: str) -> tuple[list, list]:
    """(epochs, values) of the epochs that have `name`: validation every n epochs draws a line through
    the validated epochs, not isolated dots between gaps."""
    have = [h for h in history if h.get(name) is not None]
    return [h["epoch"] for h in have], [h[name] for h in have]


def plot_history(
    history: list[dict], path: Path, main_metric: str, log_scale: bool = False, title: str | None = None
):
    """Draws and saves the figure, and returns it."""
    from matplotlib.figure import Figure  # Agg through the OO API: no display, no global pyplot state

    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for name in series_names(history, main_metric):
        style = "-" if name.startswith("train/") else "--"
        ax.plot(*points(history, name), style, label=name)
    ax.set_xlabel("epoch")
    if log_scale:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    epochs, lrs = points(history, "lr")
    if len(set(lrs)) > 1:  # a schedule: the lr beside the losses
        lr_ax = ax.twinx()
        handles += lr_ax.plot(epochs, lrs, ":", color="gray", label="lr")
        labels.append("lr")
        lr_ax.set_ylabel("learning rate")
    ax.legend(handles, labels)
    if title:
        ax.set_title(title, fontsize=9)
    with replacing(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
    return fig


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
