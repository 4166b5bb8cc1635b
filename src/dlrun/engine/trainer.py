"""The training loop shared by every task.

The trainer runs epochs of optimizer steps and validation. It owns devices, precision, accumulation and the
resume position; the rest lives beside it: what a batch means, its loss and metrics belong to the task
(tasks/), optimizers and grad scaling to `optimization`, the checkpoint files to `checkpoint`, the best epoch
and early stopping to `monitor`, and logging, the NaN watch, progress, timing and curves to `callbacks`.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from dlrun.engine import callbacks as cbs
from dlrun.engine import checkpoint as ckpt_io
from dlrun.engine import distributed, speed
from dlrun.engine.contracts import FitContext, check_data_module
from dlrun.engine.device import Precision
from dlrun.engine.interrupts import StopSignals
from dlrun.engine.metrics import MetricSums
from dlrun.engine.monitor import EarlyStopping, Monitor
from dlrun.engine.optimization import Optimization
from dlrun.engine.options import check_trainer_options, limited
from dlrun.engine.progress import Progress
from dlrun.engine.seed import set_deterministic
from dlrun.engine.speed import channels_last_batch, prepare_model
from dlrun.engine.summary import METRICS_FILE, failed, summarize, write_json
from dlrun.errors import DlrunError, NonFiniteLossError
from dlrun.loggers.base import NullLogger

log = logging.getLogger("dlrun")


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    global_step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # micro-batches of the running epoch already in the weights (mid-epoch resume)
    best: dict | None = None  # metrics of the best epoch by the monitored metric
    history: list = field(default_factory=list)  # one dict of metrics per finished epoch


class Trainer:
    def __init__(
        self,
        device: str = "auto",
        precision: str | int = "32",
        max_epochs: int = 10,
        max_steps: int = -1,
        limit_train_batches: int | float = 1.0,
        limit_val_batches: int | float = 1.0,
        fast_dev_run: bool = False,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        deterministic: bool = False,
        log_every_n_steps: int = 50,
        progress_bar: bool = True,
        checkpoint: bool = True,
        checkpoint_every_n_epochs: int | None = None,
        check_val_every_n_epoch: int = 1,
        target_metric: float | None = None,
        resume: str | None = None,
        allow_config_changes: bool | list[str] = (),
        monitor: str | None = "val/loss",
        monitor_mode: str = "min",
        early_stopping: dict | None = None,
        curves: bool = True,
        curves_log_scale: bool = False,
        compile: bool | dict | Literal["auto"] = False,
        channels_last: bool | Literal["auto"] = False,
        data_on_device: bool = False,
        matmul_precision: str | None = None,
        num_threads: int | None = None,
        strategy: str = "auto",
        ddp_backend: str = "auto",
        callbacks: list[cbs.Callback] | None = None,
    ):
        opts = check_trainer_options(
            max_epochs,
            max_steps,
            limit_train_batches,
            limit_val_batches,
            accumulate_grad_batches,
            gradient_clip_val,
            gradient_clip_algorithm,
            log_every_n_steps,
            check_val_every_n_epoch,
            checkpoint_every_n_epochs,
        )
        # single: this process alone; ddp: one of torchrun's processes (dlrun.engine.distributed).
        self.dist, self.device = distributed.setup(strategy, ddp_backend, device)
        self.precision = Precision(precision, self.device)
        self.fast_dev_run = bool(fast_dev_run)
        self.max_epochs = 1 if self.fast_dev_run else opts["max_epochs"]
        self.max_steps = opts["max_steps"]
        self.limit_train_batches = 1 if self.fast_dev_run else opts["limit_train_batches"]
        self.limit_val_batches = 1 if self.fast_dev_run else opts["limit_val_batches"]
        self.accumulate = opts["accumulate"]
        self.clip_val, self.clip_algorithm = opts["clip_val"], gradient_clip_algorithm
        self.deterministic = deterministic
        self.log_every, self.val_every = opts["log_every"], opts["val_every"]
        self.progress = Progress(progress_bar and self.dist.is_main)
        self.save_checkpoints = checkpoint and not self.fast_dev_run
        self.checkpoint_every = opts["checkpoint_every"]  # with validation, unless told
        self.target_metric = target_metric
        self.resume, self.allow_config_changes = resume, allow_config_changes
        self.monitor = Monitor(monitor, monitor_mode)
        self.early_stopping = EarlyStopping(**dict(early_stopping or {}))
        self.draw_curves = curves and not self.fast_dev_run and self.dist.is_main
        self.curves_log_scale = curves_log_scale
        # `auto` (trainer=fast): chosen for the device here, for the model in fit; failed compiles run eagerly
        self.compile, self.compile_fallback = speed.auto_compile(compile, self.device), compile == speed.AUTO
        self.channels_last_setting, self.channels_last = channels_last, False
        self.data_on_device = data_on_device  # the default of the in-memory data sets' data.on_device
        self.user_callbacks = list(callbacks or [])
        self.signals = StopSignals()
        speed.set_matmul_precision(matmul_precision)
        speed.set_num_threads(num_threads)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        model: nn.Module,
        task,
        data,
        optimizer,
        scheduler=None,
        scheduler_interval: str = "epoch",
        logger=None,
        run_dir: str | Path = ".",
        runs_root: str | Path | None = None,
        config_yaml: str | None = None,
        seed: int = 0,
        title: str | None = None,
    ) -> dict:
        """Train until max_epochs/max_steps; returns (and writes to metrics.json) the run's summary."""
        check_data_module(data)
        set_deterministic(self.deterministic)
        self.run_dir, self.title, self.config_yaml = Path(run_dir), title, config_yaml
        self.lock = ckpt_io.RunLock()
        if self.dist.is_main:  # under DDP only rank 0 writes
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.lock.acquire(self.run_dir, "two runs must not write one run dir")
            ckpt_io.remove_stale_temp_files(self.run_dir)
        try:
            return self._fit(
                model, task, data, optimizer, scheduler, scheduler_interval, logger, runs_root, seed
            )
        finally:
            self.lock.release()

    def _fit(self, model, task, data, optimizer, scheduler, interval, logger, runs_root, seed) -> dict:
        # model: what checkpoints save; step_model: what trains (compiled, DDP); eval_model: what validates
        self.channels_last = speed.auto_channels_last(self.channels_last_setting, model)
        self.model, self.step_model, self.eval_model = prepare_model(
            model, self.device, self.dist, self.compile, self.channels_last, self.compile_fallback
        )
        self.task, self.data = task, data
        if not task.automatic_optimization and self.accumulate > 1:
            raise DlrunError(
                f"{type(task).__name__} runs its own updates; set trainer.accumulate_grad_batches=1"
            )
        optimizers, schedulers = task.configure_optimizers(self.model, optimizer, scheduler)
        steps = (self.precision, self.clip_val, self.clip_algorithm, self.accumulate)
        self.optimization = Optimization(optimizers, schedulers, interval, *steps)
        quiet = logger is None or self.fast_dev_run or not self.dist.is_main  # under DDP only rank 0 logs
        self.logger = NullLogger() if quiet else logger
        self.state, self.train_sums = TrainState(), MetricSums()
        self.resumed_from = self.stopped_early = None
        self.saver = ckpt_io.CheckpointSaver(
            self.run_dir,
            lambda: ckpt_io.snapshot(self),
            self.save_checkpoints,
            self.checkpoint_every,
            self.dist.is_main,
        )
        self.callbacks = cbs.Callbacks(cbs.builtin(self) + self.user_callbacks)
        self.ctx = FitContext(self.run_dir, self.logger, data, 0, self.dist.is_main)
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.dist.setup_data(data, self.device, seed)
        if self.data_on_device and hasattr(data, "on_device"):
            log.info("trainer.data_on_device: data.on_device=%s (%s)", data.on_device, self.device.type)
        task.on_fit_start(self.model, self.ctx)

        root = Path(runs_root) if runs_root else self.run_dir.parent
        resume_path = ckpt_io.resolve_resume(self.resume, self.run_dir, root) if self.dist.is_main else None
        resume_path = self.dist.broadcast(resume_path)
        if resume_path is not None:
            ckpt_io.restore(self, resume_path)
            if self._finished():
                where = f"epoch {self.state.epoch} (step {self.state.global_step})"
                log.info(
                    "%s is already complete at %s; raise trainer.max_epochs to train on", resume_path, where
                )
                return summarize(self, "already complete", 0.0)
        self._sums_at_step = self.train_sums.snapshot()
        self.logger.log_config(self.config_yaml or "")
        start, status = time.perf_counter(), "running"
        self._write_summary(status, 0.0)
        try:
            self.callbacks.on_fit_start(self)
            with self.signals.installed(enabled=not self.dist.ddp):
                while not self._finished():
                    self._run_epoch()
            if self.dist.is_main:  # the end-of-run reports write files: rank 0 alone
                task.on_fit_end(self.model, self.ctx)
            status = "completed"
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGUSR1/2 (interrupts.StopRequested)
            status = "interrupted"
            self._on_interrupt()
            self._write_summary(status, time.perf_counter() - start)
            self.signals.forward()  # e.g. submitit's requeue, now that last.ckpt is saved
            raise
        except NonFiniteLossError:
            status = "failed: non-finite loss"
            raise
        except Exception as err:
            status = failed(err)
            raise
        finally:
            self.callbacks.on_fit_end(self, status)
            self.summary = summarize(self, status, time.perf_counter() - start)
            self._write_summary(status, self.summary["wall_time_s"])
            if status == "completed":
                best = {"best/" + k: v for k, v in (self.state.best or {}).items() if k.startswith("val/")}
                self.logger.log_hparams(self.summary["final"] | best)
            self.logger.close()
        return self.summary

    def _finished(self) -> bool:
        return (
            self.state.epoch >= self.max_epochs
            or 0 < self.max_steps <= self.state.global_step
            or self.stopped_early is not None
        )

    # ---------------------------------------------------------------- epoch
    def _run_epoch(self) -> None:
        epoch = self.state.epoch + 1
        lr = self.optimization.lr
        self._train_epoch(epoch)
        sums, count = self.dist.read_sums(self.train_sums)  # summed over the ranks under DDP
        self.epoch_examples = self.dist.sum(self._epoch_examples)
        metrics = {f"train/{k}": v for k, v in self.task.compute(sums, count).items()}
        self.callbacks.on_train_epoch_end(self, epoch, metrics)
        last = epoch >= self.max_epochs or 0 < self.max_steps <= self.state.global_step
        validated = epoch % self.val_every == 0 or last
        if validated:
            metrics |= {f"val/{k}": v for k, v in self._validate().items()}
        self.optimization.end_epoch()
        metrics["lr"] = lr
        self.callbacks.on_validation_end(self, epoch, metrics)

        self.state.epoch, self.state.batch_in_epoch, self.ctx.epoch = epoch, 0, epoch
        self.train_sums = MetricSums()
        self.state.history.append({"epoch": epoch, "step": self.state.global_step} | metrics)
        improved = False
        if validated:  # best epoch and early stopping count validated epochs only
            self.state.best, improved = self.monitor.update(self.state.best, epoch, metrics)
        self.logger.log_metrics(metrics, step=epoch)
        self.callbacks.on_epoch_end(self, epoch, metrics)
        self.task.on_epoch_end(self.model, self.ctx)
        if validated:
            self.stopped_early = self.early_stopping.check(self.state.history, self.monitor)
        if self.stopped_early:
            log.info(self.early_stopping.explain(self.stopped_early))
        if self.saver.epoch_end(epoch, improved, self._finished()):
            self._write_summary("running", 0.0)
        self.signals.check()

    def _train_epoch(self, epoch: int) -> None:
        """Train one epoch (or what is left of it after a resume)."""
        self.model.train()
        self.task.on_train_epoch_start(self.model, self.ctx)
        loader = self.data.train_loader(epoch=epoch, skip=self.state.batch_in_epoch)
        self.epoch_batches = limited(len(loader), self.limit_train_batches)
        self.callbacks.on_train_epoch_start(self, epoch)
        self._sums_at_step = self.train_sums.snapshot()
        self._epoch_examples = 0
        manual = not self.task.automatic_optimization
        micro = 0  # micro-batches since the last optimizer step
        for index, batch in enumerate(loader, start=self.state.batch_in_epoch):
            if index >= self.epoch_batches:
                break
            if self.channels_last:
                batch = channels_last_batch(batch)
            boundary = micro + 1 == self.accumulate or index + 1 == self.epoch_batches
            with self.dist.no_sync(self.step_model, boundary):  # DDP all-reduces grads at the boundary
                with self.precision.autocast():  # a manual task gets the optimizers to step itself
                    extra = (self.optimization,) if manual else ()
                    loss, stats, count = self.task.training_step(self.step_model, batch, *extra)
                if not manual:
                    self.optimization.backward(loss)
            self.train_sums.add(stats, count)
            self.callbacks.on_train_batch_end(self, loss.detach())
            self._epoch_examples += count
            micro += 1
            if boundary:
                self.optimization.end_step() if manual else self.optimization.step_all()
                micro = 0
                self.state.global_step += 1
                self.state.batch_in_epoch = index + 1
                self._sums_at_step = self.train_sums.snapshot()
                self.callbacks.on_optimizer_step(self)
                if 0 < self.max_steps <= self.state.global_step:
                    break
                self.signals.check()

    @torch.inference_mode()
    def _validate(self) -> dict[str, float]:
        self.model.eval()
        self.task.on_validation_start(self.model, self.ctx)
        loader = self.data.val_loader()
        num_batches = limited(len(loader), self.limit_val_batches)
        sums = MetricSums()
        for index, batch in enumerate(loader):
            if index >= num_batches:
                break
            self.signals.check()
            if self.channels_last:
                batch = channels_last_batch(batch)
            with self.precision.autocast():
                _, stats, count = self.task.validation_step(self.eval_model, batch)
            sums.add(stats, count)
        return self.task.compute(*self.dist.read_sums(sums))  # under DDP each rank validated its shard

    # ---------------------------------------------------------- checkpoints
    def _on_interrupt(self) -> None:
        if not self.dist.is_main:
            return
        if not self.save_checkpoints:
            log.warning("interrupted; checkpoints are off, nothing saved")
            return
        try:
            self.callbacks.on_interrupt(self)
        except NonFiniteLossError:
            log.warning("interrupted after a non-finite loss; last.ckpt left as it was")
            return
        self.saver.interrupted(self.state.epoch + 1, self.state.global_step)

    # --------------------------------------------------------------- output
    def _write_summary(self, status: str, wall_time: float) -> None:
        if self.dist.is_main:
            write_json(self.run_dir / METRICS_FILE, summarize(self, status, wall_time))
