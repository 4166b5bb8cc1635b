"""metrics.csv in the run directory: one row per epoch, one column per metric logged for epochs."""

import csv
from pathlib import Path

from dlrun.atomic import replacing
from dlrun.loggers.base import NullLogger

# Metrics the trainer logs per optimizer step (their step is not an epoch); TensorBoard and MLflow keep them.
STEP_PREFIX = "train_step/"


class CSVLogger(NullLogger):
    """Rows keyed by epoch; a metric logged later for the same epoch (a task's end-of-epoch report) joins its
    row. The file is rewritten whole after every epoch's metrics through a temporary file and a rename, so a
    crash leaves the previous complete file, never half a row."""

    def __init__(self, log_dir: str | Path, filename: str = "metrics.csv"):
        self.path = Path(log_dir) / filename
        self.rows: dict[int, dict] = {}
        if self.path.is_file():  # a resumed run continues its file
            with open(self.path, newline="") as f:
                for row in csv.DictReader(f):
                    self.rows[int(row["epoch"])] = {k: v for k, v in row.items() if v != ""}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        epoch_metrics = {k: v for k, v in metrics.items() if not k.startswith(STEP_PREFIX)}
        if not epoch_metrics:
            return
        self.rows.setdefault(step, {"epoch": step}).update(epoch_metrics)
        self._write()

    def _write(self) -> None:
        columns = list(dict.fromkeys(k for row in self.rows.values() for k in row))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(self.path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.rows[epoch] for epoch in sorted(self.rows))
