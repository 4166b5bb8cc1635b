"""The 2-D toys' task (book 11.3-11.8, train_2d and show_trace_2d): the loss is the model's output f(point);
the point before every update and after the last one is the path, written as trajectory.csv and drawn over
the function's contours as trajectory.png."""

import csv
import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from dlrun.atomic import replacing
from dlrun.engine.contracts import FitContext
from dlrun.tasks.base import Task

log = logging.getLogger("dlrun")


def plain(model: nn.Module) -> nn.Module:
    """The model itself, through torch.compile's and DDP's wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


class TrajectoryTask(Task):
    """Batches are empty: each training step is one update of the model's only parameter, the point."""

    def __init__(self, monitor: str | None = None, mode: str = "min"):
        self.monitor, self.mode = monitor, mode
        self.path: list[list[float]] = []  # [x1, x2, f] per step

    def record(self, model: nn.Module) -> None:
        model = plain(model)
        with torch.no_grad():
            x1, x2 = (float(v) for v in model.point.detach().cpu())
            self.path.append([x1, x2, float(model())])

    def step(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int]:
        loss = model()
        return loss, {"loss": loss.detach()}, 1

    def training_step(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int]:
        self.record(model)  # before this step's update
        return self.step(model, batch)

    @staticmethod
    def compute(sums: dict[str, float], count: int) -> dict[str, float]:
        return {"loss": sums["loss"] / count} if count else {}

    def on_fit_start(self, model: nn.Module, ctx: FitContext) -> None:
        self.path = []

    def on_fit_end(self, model: nn.Module, ctx: FitContext) -> None:
        self.record(model)
        for step, (x1, x2, f) in enumerate(self.path):
            ctx.logger.log_metrics({"trajectory/x1": x1, "trajectory/x2": x2, "trajectory/f": f}, step=step)
        x1, x2, f = self.path[-1]
        log.info("step %d, x1: %f, x2: %f, f: %g", len(self.path) - 1, x1, x2, f)
        run_dir = Path(ctx.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        with replacing(run_dir / "trajectory.csv", ".csv") as tmp, open(tmp, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["step", "x1", "x2", "f"])
            writer.writerows([i, *(repr(v) for v in row)] for i, row in enumerate(self.path))
        plot_trajectory(plain(model), self.path, run_dir / "trajectory.png")


def plot_trajectory(model: nn.Module, path: list[list[float]], out: Path) -> None:
    """The book's show_trace_2d: the path (orange, dots) over the function's contours, on the box
    [-5.5, 1] x [-3, 1] grown to hold the whole path."""
    from matplotlib.figure import Figure

    xs, ys = [p[0] for p in path], [p[1] for p in path]
    lo1, hi1 = min(-5.5, *xs), max(1.0, *xs)
    lo2, hi2 = min(-3.0, *ys), max(1.0, *ys)
    pad1, pad2 = 0.05 * (hi1 - lo1), 0.05 * (hi2 - lo2)
    x1, x2 = torch.meshgrid(
        torch.linspace(lo1 - pad1, hi1 + pad1, 200, dtype=torch.float64),
        torch.linspace(lo2 - pad2, hi2 + pad2, 200, dtype=torch.float64),
        indexing="ij",
    )
    fig = Figure(figsize=(4.5, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.contour(x1.numpy(), x2.numpy(), model.f(x1, x2).numpy(), colors="#1f77b4")
    ax.plot(xs, ys, "-o", color="#ff7f0e")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_title(f"{len(path) - 1} steps, end ({xs[-1]:.6f}, {ys[-1]:.6f})", fontsize=9)
    with replacing(out, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
