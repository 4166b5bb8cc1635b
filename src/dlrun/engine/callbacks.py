"""Engine callbacks: code that runs at the loop's events without the loop knowing it.

Subclass `Callback` and override the events you need; every one receives the Trainer, whose `run_dir`,
`model`, `task`, `data`, `logger`, `state` (epoch, global_step, history, best) and `optimization` are there
to read. Add yours from config (`callbacks` group, or `+callbacks.mine._target_=my_pkg.MyCallback`).

Events, in the order they happen:
    on_fit_start(trainer)
    on_train_epoch_start(trainer, epoch)
    on_train_batch_end(trainer, loss)          every micro-batch (loss: the undetached tensor's .detach())
    on_optimizer_step(trainer)                 after every optimizer step (state.global_step counts it)
    on_train_epoch_end(trainer, epoch, metrics)    metrics: train/*; add entries to log them
    on_validation_end(trainer, epoch, metrics)     metrics: train/*, val/*, lr; add entries to log them
    on_epoch_end(trainer, epoch, metrics)      after the epoch is logged and in state.history
    on_interrupt(trainer)                      Ctrl-C / SIGTERM, before last.ckpt is saved
    on_fit_end(trainer, status)                always, last (status: completed, interrupted, failed: ...)

The built-in ones below are what every run has: the NaN watch with step logging, the progress display,
throughput timing and curves.png.
"""

import logging
import math
import time

import torch

from dlrun.engine.curves import CurvePlotter
from dlrun.engine.progress import Progress
from dlrun.errors import NonFiniteLossError

log = logging.getLogger("dlrun")

EVENTS = (
    "on_fit_start",
    "on_train_epoch_start",
    "on_train_batch_end",
    "on_optimizer_step",
    "on_train_epoch_end",
    "on_validation_end",
    "on_epoch_end",
    "on_interrupt",
    "on_fit_end",
)


class Callback:
    def on_fit_start(self, trainer) -> None: ...

    def on_train_epoch_start(self, trainer, epoch: int) -> None: ...

    def on_train_batch_end(self, trainer, loss: torch.Tensor) -> None: ...

    def on_optimizer_step(self, trainer) -> None: ...

    def on_train_epoch_end(self, trainer, epoch: int, metrics: dict) -> None: ...

    def on_validation_end(self, trainer, epoch: int, metrics: dict) -> None: ...

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None: ...

    def on_interrupt(self, trainer) -> None: ...

    def on_fit_end(self, trainer, status: str) -> None: ...


class Callbacks:
    """Calls an event on every callback that overrides it (the per-batch events cost nothing otherwise)."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = list(callbacks)
        for event in EVENTS:
            overriding = [
                getattr(cb, event)
                for cb in self.callbacks
                if getattr(type(cb), event) is not getattr(Callback, event)
            ]
            setattr(self, event, _fan_out(overriding))


def _fan_out(methods):
    if not methods:
        return lambda *args: None
    if len(methods) == 1:
        return methods[0]

    def call(*args):
        for method in methods:
            method(*args)

    return call


class LossWatch(Callback):
    """The NaN watch and step logging. Losses stay on the device until every `log_every` optimizer steps (and
    at each epoch's end), when one sync reads them all: the first non-finite one stops the run with its step
    and the last finite loss; the finite ones are logged as train_step/loss with the lr.

    Under DDP every rank checks at the same steps and learns whether any rank saw a non-finite loss, so all
    stop together."""

    def __init__(self, log_every: int):
        self.log_every = max(1, log_every)
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.last_finite: tuple[int, float] | None = None

    def on_train_batch_end(self, trainer, loss):
        self.pending.append((trainer.state.global_step + 1, loss))

    def on_optimizer_step(self, trainer):
        if trainer.state.global_step % self.log_every:
            return
        losses = self.check(trainer)
        trainer.logger.log_metrics(
            {"train_step/loss": sum(losses) / len(losses), "train_step/lr": trainer.optimization.lr},
            step=trainer.state.global_step,
        )
        sums, count = trainer.train_sums.read()
        trainer.progress.show(trainer.task.compute(sums, count))

    def on_train_epoch_end(self, trainer, epoch, metrics):
        self.check(trainer)

    def on_interrupt(self, trainer):
        self.check(trainer, all_ranks=False)  # rank 0 alone saves on Ctrl-C: no collective here

    def check(self, trainer, all_ranks: bool = True) -> list[float]:
        """Read the losses since the last check (one sync); raise at the first that is not finite."""
        if not self.pending:
            return [self.last_finite[1]] if self.last_finite else [0.0]
        steps = [s for s, _ in self.pending]
        values = torch.stack([v.float() for _, v in self.pending]).tolist()
        self.pending = []
        here = not all(math.isfinite(v) for v in values)
        dist = trainer.dist
        if all_ranks and dist.ddp and dist.sum(int(here)) and not here:
            raise NonFiniteLossError(
                f"the training loss of another process became non-finite by step {steps[-1]} (epoch "
                f"{trainer.state.epoch + 1}); see its error. Lower optim.lr or set trainer.gradient_clip_val"
            )
        for step, value in zip(steps, values, strict=True):
            if not math.isfinite(value):
                last = (
                    f"last finite loss {self.last_finite[1]:.4g} at step {self.last_finite[0]}"
                    if self.last_finite
                    else "no finite loss before it"
                )
                kept = trainer.saver.last
                kept_msg = (
                    f"{kept} from epoch {trainer.state.epoch} is kept"
                    if kept.is_file()
                    else "no checkpoint yet"
                )
                raise NonFiniteLossError(
                    f"training loss became {value} at step {step} (epoch {trainer.state.epoch + 1}); {last}; "
                    f"{kept_msg}. Lower optim.lr or set trainer.gradient_clip_val"
                )
            self.last_finite = (step, value)
        return values


class ProgressDisplay(Callback):
    """A live tqdm bar per epoch on a terminal; one line per epoch always (dlrun.engine.progress)."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def on_train_epoch_start(self, trainer, epoch):
        self.progress.start_epoch(
            epoch, trainer.max_epochs, trainer.epoch_batches, initial=trainer.state.batch_in_epoch
        )

    def on_train_batch_end(self, trainer, loss):
        self.progress.advance()

    def on_train_epoch_end(self, trainer, epoch, metrics):
        self.progress.end_epoch()

    def on_epoch_end(self, trainer, epoch, metrics):
        self.progress.epoch_line(epoch, trainer.max_epochs, metrics)

    def on_fit_end(self, trainer, status):
        self.progress.end_epoch()


class Throughput(Callback):
    """Training examples per second (summed over ranks) and the epoch's wall time, in every epoch's metrics;
    the run's overall rate for metrics.json."""

    def __init__(self):
        self.examples = 0
        self.train_time = 0.0

    def on_train_epoch_start(self, trainer, epoch):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, epoch, metrics):
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        self.epoch_train_time = time.perf_counter() - self.t0

    def on_validation_end(self, trainer, epoch, metrics):
        examples, seconds = trainer.epoch_examples, self.epoch_train_time
        metrics["throughput/train_examples_per_s"] = examples / seconds if seconds > 0 else 0.0
        metrics["time/epoch_s"] = time.perf_counter() - self.t0
        self.examples += examples
        self.train_time += seconds

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.train_time if self.train_time else 0.0


class Curves(Callback):
    """curves.png in the run dir: train/val loss and the monitored metric per epoch (the book's Animator),
    redrawn at most every few seconds and always at the end."""

    def __init__(self, log_scale: bool = False):
        self.log_scale = log_scale

    def on_fit_start(self, trainer):
        self.plotter = CurvePlotter(
            trainer.run_dir / "curves.png",
            trainer.monitor.metric or "val/loss",
            self.log_scale,
            title=trainer.title,
        )

    def on_epoch_end(self, trainer, epoch, metrics):
        self.plotter.update(trainer.state.history)

    def on_fit_end(self, trainer, status):
        self.plotter.update(trainer.state.history, final=True)


class TimeToTarget(Callback):
    """trainer.target_metric: the first epoch, and the training time, at which the monitored metric reached
    the target (in metrics.json as `reached_target`): runs compared on what users care about."""

    def __init__(self, monitor, target: float | None):
        self.monitor, self.target = monitor, target
        self.reached: dict | None = None
        self.train_time = 0.0

    def on_validation_end(self, trainer, epoch, metrics):
        self.train_time += metrics.get("time/epoch_s", 0.0)
        value = metrics.get(self.monitor.metric)
        if self.target is None or self.reached or value is None:
            return
        if self.monitor.better(value, self.target) or value == self.target:
            self.reached = {"target": float(self.target), "epoch": epoch, "time_s": self.train_time}
            log.info(
                "%s reached %g at epoch %d after %.1f s",
                self.monitor.metric,
                self.target,
                epoch,
                self.train_time,
            )


def builtin(trainer) -> list[Callback]:
    """What every run has (in this order): the NaN watch and step logging, progress, throughput, the time to
    trainer.target_metric, and curves.png (rank 0). The trainer keeps the two its summary reads."""
    trainer.throughput = Throughput()
    trainer.target = TimeToTarget(trainer.monitor, trainer.target_metric)
    callbacks = [
        LossWatch(trainer.log_every),
        ProgressDisplay(trainer.progress),
        trainer.throughput,
        trainer.target,
    ]
    return callbacks + ([Curves(trainer.curves_log_scale)] if trainer.draw_curves else [])
