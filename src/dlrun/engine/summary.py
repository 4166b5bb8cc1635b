"""What metrics.json holds: one typed record, written at the start of a run (status `running`), at every
checkpoint, and at its end (`completed`, `interrupted`, `stopped early`, `failed: <why>`)."""

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dlrun.atomic import replacing

log = logging.getLogger("dlrun")

METRICS_FILE = "metrics.json"


@dataclass
class RunSummary:
    status: str = "running"
    epochs: int = 0
    global_step: int = 0
    monitor: str | None = None
    best: dict | None = None
    final: dict = field(default_factory=dict)
    num_params: int = 0
    wall_time_s: float = 0.0
    train_examples_per_s: float = 0.0
    device: str = "cpu"
    world_size: int = 1
    precision: str = "32"
    compile: bool = False
    channels_last: bool = False
    run_dir: str = "."
    best_ckpt: str | None = None
    resumed_from: str | None = None
    stopped_early: dict | None = None
    reached_target: dict | None = None  # trainer.target_metric: {target, epoch, time_s} when first reached
    pid: int | None = None
    history: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def write_json(path: Path, obj: dict) -> None:
    """Atomically, like the checkpoints."""
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))


def read_summary(path: Path) -> dict | None:
    """A run's metrics.json as a dict; None (with a warning naming the file) when it is missing or unreadable,
    so that one damaged run never stops the tools that scan many (resume=auto, sweep summaries)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("%s is unreadable (%s); ignoring that run", path, type(err).__name__)
        return None
    if not isinstance(obj, dict):
        log.warning("%s holds a JSON %s, not a run summary; ignoring that run", path, type(obj).__name__)
        return None
    return obj


def summarize(trainer, status: str, wall_time: float) -> dict:
    """The trainer's state as the metrics.json record."""
    best_ckpt = trainer.saver.best
    return RunSummary(
        status=status,
        epochs=trainer.state.epoch,
        global_step=trainer.state.global_step,
        monitor=trainer.monitor.metric,
        best=trainer.state.best,
        final=dict(trainer.state.history[-1]) if trainer.state.history else {},
        num_params=trainer.num_params,
        wall_time_s=wall_time,
        train_examples_per_s=trainer.throughput.examples_per_s,
        device=str(trainer.device),
        world_size=trainer.dist.world_size,
        precision=trainer.precision.name,
        compile=bool(trainer.compile),
        channels_last=trainer.channels_last,
        run_dir=str(trainer.run_dir),
        best_ckpt=str(best_ckpt) if best_ckpt.is_file() else None,
        resumed_from=trainer.resumed_from,
        stopped_early=trainer.stopped_early,
        reached_target=trainer.target.reached,
        pid=os.getpid(),
        history=trainer.state.history,
    ).to_dict()


def failed(err: BaseException) -> str:
    """The status of a run that raised: `failed: <one line>` (a DlrunError's own words, else the type too)."""
    from dlrun.errors import DlrunError, first_line

    why = first_line(err) if isinstance(err, DlrunError) else f"{type(err).__name__}: {first_line(err)}"
    return f"failed: {why}"
