"""Hydra callbacks. Imported when Hydra starts, so nothing heavy at module level."""

import csv
import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dlrun.engine.ranks import env_rank
from dlrun.engine.summary import METRICS_FILE, read_summary

log = logging.getLogger("dlrun")


def collect_runs(sweep_dir: Path) -> list[dict]:
    """One row per job of a sweep: its overrides, status, best and final metrics, time."""
    rows = []
    for metrics_file in sorted(
        sweep_dir.glob(f"*/{METRICS_FILE}"),
        key=lambda p: (0, int(p.parent.name), "") if p.parent.name.isdigit() else (1, 0, p.parent.name),
    ):
        metrics = read_summary(metrics_file)
        if metrics is None:
            metrics = {"status": "unreadable metrics.json"}
        overrides_file = metrics_file.parent / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(overrides_file) if overrides_file.is_file() else []
        row = {
            "job": metrics_file.parent.name,
            "overrides": list(overrides),
            "status": metrics.get("status"),
            "epochs": metrics.get("epochs"),
            "wall_time_s": round(metrics.get("wall_time_s", 0.0), 2),
        }
        best = metrics.get("best") or {}
        monitor = metrics.get("monitor")
        if monitor and monitor in best:
            row[f"best {monitor}"] = best[monitor]
            row["best epoch"] = best.get("epoch")
        for key, value in (metrics.get("final") or {}).items():
            if key.startswith(("train/", "val/")):
                row[f"final {key}"] = value
        for key, value in (metrics.get("mean") or {}).items():  # K-fold runs
            row[f"mean {key}"] = value
        row["_history"] = metrics.get("history") or []
        row["_monitor"] = monitor
        rows.append(row)
    # Label each run by what sets it apart: the overrides that all jobs share say nothing.
    shared = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    for row in rows:
        row["overrides"] = " ".join(o for o in row["overrides"] if o not in shared)
    return rows


def write_summary(sweep_dir: Path, x_axis: str = "epoch") -> Path | None:
    rows = collect_runs(sweep_dir)
    if not rows:
        return None
    columns = list(dict.fromkeys(k for row in rows for k in row if not k.startswith("_")))
    path = sweep_dir / "summary.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if x_axis == "epoch":
        plot_summary(rows, sweep_dir / "summary.png")
    else:
        plot_eval_curves(rows, sweep_dir, x_axis, sweep_dir / "summary.png")
    return path


X_AXES = {"examples": (0, "examples seen"), "time": (1, "training time (s)")}


def plot_eval_curves(rows: list[dict], sweep_dir: Path, x_axis: str, path: Path) -> None:
    """The book's optimizer comparison (11.5-11.10): every job's eval_curve.csv (callbacks=eval_curve), loss
    against examples seen or training time."""
    from matplotlib.figure import Figure

    from dlrun.engine.eval_curve import CURVE_FILE, read_curve

    if x_axis not in X_AXES:
        raise ValueError(f"x_axis={x_axis!r}; use epoch, examples or time")
    column, label = X_AXES[x_axis]
    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for row in rows:
        curve_file = sweep_dir / row["job"] / CURVE_FILE
        if not curve_file.is_file():
            continue
        curve = read_curve(curve_file)
        ax.plot(
            [c[column] for c in curve], [c[2] for c in curve], label=row["overrides"] or f"job {row['job']}"
        )
    ax.set_xlabel(label)
    ax.set_ylabel("loss")
    if x_axis == "time":
        ax.set_xscale("symlog", linthresh=0.01)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)


def plot_summary(rows: list[dict], path: Path) -> None:
    """Every run's validation curves on shared axes: val/loss and the monitored metric."""
    from matplotlib.figure import Figure

    monitor = next((r["_monitor"] for r in rows if r["_monitor"]), "val/loss")
    panels = ["val/loss"] + ([monitor] if monitor != "val/loss" else [])
    fig = Figure(figsize=(5.5 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, name in zip(axes, panels, strict=True):
        for row in rows:
            history = row["_history"]
            ax.plot(
                [h["epoch"] for h in history],
                [h.get(name, float("nan")) for h in history],
                label=row["overrides"] or f"job {row['job']}",
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.savefig(path, dpi=100)


class SweepSummary(Callback):
    """After a multirun: summary.csv (one row per run) and summary.png in the sweep dir: val curves per epoch,
    or (x_axis=examples|time) every job's eval_curve.csv, the book's optimizer comparison."""

    def __init__(self, x_axis: str = "epoch"):
        self.x_axis = x_axis

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if env_rank() != 0:  # a sweep under torchrun: rank 0 writes the summary
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        path = write_summary(sweep_dir, self.x_axis)
        if path is not None:
            log.info("sweep summary: %s, %s", path, path.with_suffix(".png"))
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            unfinished = [f"{r['job']} ({r['status']})" for r in rows if r["status"] != "completed"]
            if unfinished:
                log.warning("jobs that did not complete: %s", ", ".join(unfinished))
