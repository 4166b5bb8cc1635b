"""The book's train_ch11 curve: the loss over the validation set every `every_n_examples` training examples,
against the examples seen and the training time (the evaluation itself is not timed, as the book's Timer).

Logged as `eval/loss` (step: examples seen) and written to `eval_curve.csv` (examples, time_s, loss) in the
run dir; a sweep's summary can draw every job's curve against examples or time
(`hydra.callbacks.sweep_summary.x_axis=examples|time`). Evaluating draws no random numbers, so a resumed run
gives the same curve.
"""

import csv
import time
from pathlib import Path

import torch

from dlrun.atomic import replacing
from dlrun.engine.callbacks import Callback
from dlrun.engine.metrics import MetricSums
from dlrun.errors import DlrunError

CURVE_FILE = "eval_curve.csv"


class EvalEveryNExamples(Callback):
    def __init__(self, every_n_examples: int = 200, metric: str = "loss"):
        if every_n_examples < 1:
            raise DlrunError(f"callbacks.eval_curve.every_n_examples={every_n_examples} must be >= 1")
        self.every, self.metric = every_n_examples, metric
        self.rows: list[tuple[int, float, float]] = []

    def on_fit_start(self, trainer):
        # After a resume: the examples and time of the epochs already done come from the written curve.
        self.path = trainer.run_dir / CURVE_FILE
        previous = Path(trainer.resumed_from).parent / CURVE_FILE if trainer.resumed_from else None
        if previous is not None and previous.is_file():
            self.rows = read_curve(previous)
        self.seen = self.rows[-1][0] if self.rows else 0
        self.train_time = self.rows[-1][1] if self.rows else 0.0
        if not self.rows:
            self.rows.append((0, 0.0, self.evaluate(trainer)))

    def on_train_epoch_start(self, trainer, epoch):
        self.epoch_base = self.seen - trainer.train_sums.count  # a resumed epoch already counted its examples
        self.clock = time.perf_counter()

    def on_optimizer_step(self, trainer):
        now = self.epoch_base + trainer.train_sums.count
        if now // self.every > self.seen // self.every:
            self.train_time += time.perf_counter() - self.clock
            loss = self.evaluate(trainer)
            self.rows.append((now, self.train_time, loss))
            trainer.logger.log_metrics({f"eval/{self.metric}": loss}, step=now)
            self.clock = time.perf_counter()
        self.seen = now

    def on_epoch_end(self, trainer, epoch, metrics):
        self.write()

    def on_fit_end(self, trainer, status):
        self.write()

    @torch.no_grad()
    def evaluate(self, trainer) -> float:
        model, task = trainer.model, trainer.task
        was_training = model.training
        model.eval()
        sums = MetricSums()
        for batch in trainer.data.val_loader():
            with trainer.precision.autocast():
                _, stats, count = task.validation_step(trainer.eval_model, batch)
            sums.add(stats, count)
        model.train(was_training)
        return task.compute(*sums.read())[self.metric]

    def write(self) -> None:
        if not self.path.parent.is_dir():  # not rank 0 under DDP
            return
        with replacing(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["examples", "time_s", "loss"])
            writer.writerows([(n, f"{t:.6f}", f"{v:.6g}") for n, t, v in self.rows])


def read_curve(path: Path) -> list[tuple[int, float, float]]:
    with open(path, newline="") as f:
        return [(int(r["examples"]), float(r["time_s"]), float(r["loss"])) for r in csv.DictReader(f)]
