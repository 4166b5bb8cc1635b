"""What metrics.json holds: one typed record, written at the start of a run (status `running`), at every
checkpoint, and at its end (`completed`, `interrupted`, `stopped early`, `failed: <why>`)."""

import json
import logging
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
