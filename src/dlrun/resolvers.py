"""OmegaConf resolvers used by conf/: registered once, before Hydra composes a config."""

import os
import time
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from dlrun.engine.ranks import env_rank, env_world_size

# Random per process: two runs started in the same second still get different directories.
RUN_ID = os.urandom(2).hex()
_STAMP: tuple[float, str] | None = None


def _coalesce(*values):
    """The first value that is not null: ${coalesce:${data.resize},${data.size}}."""
    return next((v for v in values if v is not None), None)


def run_stamp() -> tuple[float, str]:
    """(start time, run id) of this run: read once per process; under torchrun (WORLD_SIZE > 1) rank 0's,
    so that every rank names the same run directory (see dlrun.engine.distributed.shared_run_stamp)."""
    global _STAMP
    if _STAMP is None:
        stamp = (time.time(), RUN_ID)
        if env_world_size() > 1:
            from dlrun.engine.distributed import shared_run_stamp  # torch only under torchrun

            stamp = shared_run_stamp(stamp)
        _STAMP = stamp
    return _STAMP


def _run_stamp(pattern: str = "%Y-%m-%d_%H-%M-%S") -> str:
    """${run_stamp:%Y-%m-%d_%H-%M-%S}: the start time in that format, then the run id."""
    when, run_id = run_stamp()
    return f"{datetime.fromtimestamp(when).strftime(pattern)}_{run_id}"


def _class_count(folder: str) -> int:
    """${class_count:DIR}: the number of class folders in DIR (0 when DIR is missing: the data module then
    says so in one line), so that model.num_classes follows an image folder's classes."""
    path = Path(folder)
    return sum(1 for p in path.iterdir() if p.is_dir()) if path.is_dir() else 0


def _rank_zero(value, other=None):
    """${rank_zero:A,B}: A in a single process and on rank 0 of a torchrun job, B on the other ranks."""
    return value if env_rank() == 0 else other


def register() -> None:
    for name, fn in {
        "coalesce": _coalesce,
        "minus": lambda a, b: a - b,
        "run_id": lambda: run_stamp()[1],
        "run_stamp": _run_stamp,
        "rank_zero": _rank_zero,
        "class_count": _class_count,
    }.items():
        if not OmegaConf.has_resolver(name):
            # The stamp is cached in the config, like Hydra's ${now:}: the jobs that a launcher runs in other
            # processes (joblib, submitit) get the parent's config cache, so a sweep keeps one sweep dir.
            OmegaConf.register_new_resolver(name, fn, use_cache=name in ("run_id", "run_stamp"))


register()
