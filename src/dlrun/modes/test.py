"""mode=test ckpt_path=...: a checkpoint's metrics on the held-out split, by the task's own validation_step
and compute, written to test_metrics.json in the run dir."""

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from dlrun.engine.device import Precision, select_device
from dlrun.engine.metrics import MetricSums
from dlrun.engine.seed import seed_everything
from dlrun.engine.summary import write_json
from dlrun.errors import DlrunError
from dlrun.modes.common import checkpoint_model
from dlrun.run import build

log = logging.getLogger("dlrun")

TEST_FILE = "test_metrics.json"


def run(cfg: DictConfig) -> dict:
    seed_everything(cfg.seed)
    device = select_device(cfg.trainer.device)
    precision = Precision(cfg.trainer.precision, device)
    task = build(cfg.task, "task")
    data = build(cfg.data, "data")
    data.setup(device, cfg.seed)
    model, paths = checkpoint_model(cfg, data, device)
    start = time.perf_counter()
    metrics, count, batches = evaluate(model, task, data, precision)
    result = {
        "metrics": metrics,
        "examples": count,
        "batches": batches,
        "checkpoints": [str(p) for p in paths],
        "device": str(device),
        "precision": precision.name,
        "wall_time_s": time.perf_counter() - start,
    }
    out = Path(cfg.paths.output_dir) / TEST_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    log.info("%s on %d held-out examples: %s", ", ".join(str(p) for p in paths), count, shown)
    log.info("outputs: %s", out)
    return result


@torch.inference_mode()
def evaluate(model, task, data, precision: Precision) -> tuple[dict[str, float], int, int]:
    """test/<metric> over every batch of data.val_loader()."""
    sums, batches = MetricSums(), 0
    for batch in data.val_loader():
        with precision.autocast():
            _, stats, count = task.validation_step(model, batch)
        sums.add(stats, count)
        batches += 1
    if batches == 0:
        raise DlrunError(
            f"data {type(data).__name__} has no held-out split to test on; give it validation data"
        )
    metrics = task.compute(*sums.read())
    return {f"test/{k}": float(v) for k, v in metrics.items()}, sums.count, batches
