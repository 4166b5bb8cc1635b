"""The training loop shared by every task.

The trainer owns devices, precision, accumulation, clipping, scheduling, checkpoints and logging. What a batch
means, which loss to use and which metrics to report belong to the task; the data and the model come from
their own config groups. Nothing in here knows about images, text or a particular model.
"""

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from dlrun import __version__
from dlrun.atomic import replacing
from dlrun.engine import checkpoint as ckpt_io
from dlrun.engine import distributed
from dlrun.engine.curves import CurvePlotter
from dlrun.engine.device import Precision
from dlrun.engine.early_stopping import EarlyStopping
from dlrun.engine.metrics import MetricSums
from dlrun.engine.progress import Progress
from dlrun.engine.seed import set_deterministic
from dlrun.engine.speed import (
    channels_last_batch,
    channels_last_model,
    compile_model,
    set_matmul_precision,
    set_num_threads,
)
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


def write_json(path: Path, obj: dict) -> None:
    """Atomically, like the checkpoints."""
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))


def _hook(task, name: str, *args) -> None:
    """Tasks may define on_fit_start(model, data), on_train_epoch_start(model), on_validation_start(model),
    on_epoch_end(model, epoch, logger) and on_fit_end(model, logger); all are optional."""
    fn = getattr(task, name, None)
    if fn is not None:
        fn(*args)


def _limit(total: int, limit: int | float) -> int:
    if isinstance(limit, bool) or limit is None:
        raise DlrunError(f"batch limit {limit!r} must be an int (batches) or a float in (0, 1] (fraction)")
    if isinstance(limit, float):
        if not 0.0 < limit <= 1.0:
            raise DlrunError(f"batch limit {limit} as a fraction must lie in (0, 1]")
        return max(1, int(total * limit)) if total else 0
    return min(total, int(limit))


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
        checkpoint_every_n_epochs: int = 1,
        resume: str | None = None,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        early_stopping: dict | None = None,
        curves: bool = True,
        curves_log_scale: bool = False,
        compile: bool | dict = False,
        channels_last: bool = False,
        matmul_precision: str | None = None,
        num_threads: int | None = None,
        strategy: str = "auto",
        ddp_backend: str = "auto",
    ):
        if gradient_clip_algorithm not in ("norm", "value"):
            raise DlrunError(
                f"trainer.gradient_clip_algorithm={gradient_clip_algorithm!r}; use norm or value"
            )
        if monitor_mode not in ("min", "max"):
            raise DlrunError(f"monitor mode {monitor_mode!r}; use min or max")
        if accumulate_grad_batches < 1:
            raise DlrunError(f"trainer.accumulate_grad_batches={accumulate_grad_batches} must be >= 1")
        if max_epochs < 1 and max_steps < 1:
            raise DlrunError("set trainer.max_epochs or trainer.max_steps to a positive number")
        # single: this process alone; ddp: one of torchrun's processes (dlrun.engine.distributed).
        self.dist, self.device = distributed.setup(strategy, ddp_backend, device)
        self.precision = Precision(precision, self.device)
        self.fast_dev_run = bool(fast_dev_run)
        self.max_epochs = 1 if self.fast_dev_run else (max_epochs if max_epochs > 0 else 2**31)
        self.max_steps = max_steps
        self.limit_train_batches = 1 if self.fast_dev_run else limit_train_batches
        self.limit_val_batches = 1 if self.fast_dev_run else limit_val_batches
        self.accumulate = accumulate_grad_batches
        self.clip_val = gradient_clip_val
        self.clip_algorithm = gradient_clip_algorithm
        self.deterministic = deterministic
        self.log_every = max(1, log_every_n_steps)
        self.progress = Progress(progress_bar and self.dist.is_main)
        self.save_checkpoints = checkpoint and not self.fast_dev_run
        if checkpoint_every_n_epochs < 1:
            raise DlrunError(f"trainer.checkpoint_every_n_epochs={checkpoint_every_n_epochs} must be >= 1")
        self.checkpoint_every = checkpoint_every_n_epochs
        self.resume = resume
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.early_stopping = EarlyStopping(**dict(early_stopping or {}))
        self.draw_curves = curves and not self.fast_dev_run and self.dist.is_main
        self.curves_log_scale = curves_log_scale
        self.compile = compile
        self.channels_last = channels_last
        set_matmul_precision(matmul_precision)
        set_num_threads(num_threads)

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
        if scheduler_interval not in ("epoch", "step"):
            raise DlrunError(f"sched.interval={scheduler_interval!r}; use epoch or step")
        set_deterministic(self.deterministic)
        self.run_dir = Path(run_dir)
        if self.dist.is_main:  # under DDP only rank 0 writes
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.model = model.to(self.device)
        if self.channels_last:
            channels_last_model(self.model)
        # What runs the steps: the model itself, or its compiled wrapper (checkpoints save self.model).
        self.step_model = compile_model(self.model, self.compile)
        # Under DDP the training steps run (compiled) DDP(model); validation runs without the DDP wrapper,
        # which could sync buffers while the ranks' validation shards differ in length.
        self.eval_model = self.step_model
        if self.dist.ddp:
            self.step_model = compile_model(self.dist.wrap(self.model, self.device), self.compile)
        self.task = task
        self.data = data
        self.optimizer = optimizer(self.model.parameters())
        self.scheduler = scheduler(self.optimizer) if scheduler is not None else None
        self.scheduler_interval = scheduler_interval
        quiet = logger is None or self.fast_dev_run or not self.dist.is_main  # under DDP only rank 0 logs
        self.logger = NullLogger() if quiet else logger
        self.config_yaml = config_yaml
        self.state = TrainState()
        self.train_sums = MetricSums()
        self.resumed_from = None
        self.stopped_early = None
        self._best_pending = None  # a CPU copy of the best epoch's checkpoint, not yet on disk
        self.curves = (
            CurvePlotter(self.run_dir / "curves.png", self.monitor, self.curves_log_scale, title=title)
            if self.draw_curves
            else None
        )
        self._pending_losses: list[tuple[int, torch.Tensor]] = []
        self._last_finite: tuple[int, float] | None = None
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.dist.setup_data(data, self.device, seed)
        _hook(task, "on_fit_start", self.model, data)

        resume_path = self.dist.broadcast(self._resume_path(runs_root) if self.dist.is_main else None)
        if resume_path is not None:
            self._load(resume_path)
        self._sums_at_step = self.train_sums.snapshot()

        self.logger.log_config(config_yaml or "")
        start, status = time.perf_counter(), "running"
        self._session_examples, self._session_train_time = 0, 0.0
        try:
            while not self._finished():
                self._run_epoch()
            if self.dist.is_main:  # the end-of-run reports write files: rank 0 alone
                _hook(self.task, "on_fit_end", self.model, self.logger)
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            self._on_interrupt()
            raise
        except NonFiniteLossError:
            status = "failed: non-finite loss"
            raise
        finally:
            self.progress.end_epoch()
            if self.curves is not None:
                self.curves.update(self.state.history, final=True)
            self.summary = self._summary(status, time.perf_counter() - start)
            if self.dist.is_main:
                write_json(self.run_dir / "metrics.json", self.summary)
            if status == "completed":
                self.logger.log_hparams(
                    self.summary["final"] | {"best/" + k: v for k, v in self._best().items()}
                )
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
        lr = self.optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        examples = self._train_epoch(epoch)
        train_time = time.perf_counter() - t0
        val_metrics = self._validate()
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self.scheduler.step()

        sums, count = self.dist.read_sums(self.train_sums)  # summed over the ranks under DDP
        examples = self.dist.sum(examples)
        metrics = {f"train/{k}": v for k, v in self.task.compute(sums, count).items()}
        self._check_finite()
        metrics |= {f"val/{k}": v for k, v in val_metrics.items()}
        metrics["lr"] = lr
        metrics["throughput/train_examples_per_s"] = examples / train_time if train_time > 0 else 0.0
        metrics["time/epoch_s"] = time.perf_counter() - t0
        self._session_examples += examples
        self._session_train_time += train_time

        self.state.epoch = epoch
        self.state.batch_in_epoch = 0
        self.train_sums = MetricSums()
        self.state.history.append({"epoch": epoch, "step": self.state.global_step} | metrics)
        improved = self._update_best(epoch, metrics)
        self.logger.log_metrics(metrics, step=epoch)
        self.progress.epoch_line(epoch, self.max_epochs, metrics)
        _hook(self.task, "on_epoch_end", self.model, epoch, self.logger)
        if self.curves is not None:
            self.curves.update(self.state.history)
        self.stopped_early = self.early_stopping.check(self.state.history)
        if self.stopped_early:
            stop = self.stopped_early
            log.info(
                "early stopping at epoch %d: %s has not improved by more than %g for %d epochs; "
                "best %.4g at epoch %d",
                epoch,
                stop["monitor"],
                self.early_stopping.min_delta,
                stop["patience"],
                stop["best"],
                stop["best_epoch"],
            )
        if self.save_checkpoints:
            self._save_checkpoints(epoch, improved)

    def _train_epoch(self, epoch: int) -> int:
        """Train one epoch (or what is left of it after a resume); returns the number of examples seen."""
        self.model.train()
        _hook(self.task, "on_train_epoch_start", self.model)
        loader = self.data.train_loader(epoch=epoch, skip=self.state.batch_in_epoch)
        num_batches = _limit(len(loader), self.limit_train_batches)
        start = self.state.batch_in_epoch
        self.progress.start_epoch(epoch, self.max_epochs, num_batches, initial=start)
        self._sums_at_step = self.train_sums.snapshot()
        examples = 0
        micro = 0  # micro-batches since the last optimizer step
        for index, batch in enumerate(loader, start=start):
            if index >= num_batches:
                break
            if self.channels_last:
                batch = channels_last_batch(batch)
            sync = micro + 1 == self.accumulate or index + 1 == num_batches  # DDP all-reduces grads then
            with self.dist.no_sync(self.step_model, sync):
                with self.precision.autocast():
                    loss, stats, count = self.task.training_step(self.step_model, batch)
                self.precision.scaler.scale(loss / self.accumulate).backward()
            self.train_sums.add(stats, count)
            self._pending_losses.append((self.state.global_step + 1, loss.detach()))
            examples += count
            micro += 1
            self.progress.advance()
            if micro == self.accumulate or index + 1 == num_batches:
                self._optimizer_step()
                micro = 0
                self.state.batch_in_epoch = index + 1
                self._sums_at_step = self.train_sums.snapshot()
                if self.state.global_step % self.log_every == 0:
                    self._log_step()
                if 0 < self.max_steps <= self.state.global_step:
                    break
        self.progress.end_epoch()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return examples

    def _optimizer_step(self) -> None:
        scaler = self.precision.scaler
        if self.clip_val is not None:
            scaler.unscale_(self.optimizer)
            if self.clip_algorithm == "norm":
                nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_val)
            else:
                nn.utils.clip_grad_value_(self.model.parameters(), self.clip_val)
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.global_step += 1
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()

    @torch.inference_mode()
    def _validate(self) -> dict[str, float]:
        self.model.eval()
        _hook(self.task, "on_validation_start", self.model)
        loader = self.data.val_loader()
        num_batches = _limit(len(loader), self.limit_val_batches)
        sums = MetricSums()
        for index, batch in enumerate(loader):
            if index >= num_batches:
                break
            if self.channels_last:
                batch = channels_last_batch(batch)
            with self.precision.autocast():
                _, stats, count = self.task.validation_step(self.eval_model, batch)
            sums.add(stats, count)
        return self.task.compute(*self.dist.read_sums(sums))  # under DDP each rank validated its shard

    # -------------------------------------------------------- logging, NaN
    def _log_step(self) -> None:
        losses = self._check_finite()
        lr = self.optimizer.param_groups[0]["lr"]
        self.logger.log_metrics(
            {"train_step/loss": sum(losses) / len(losses), "train_step/lr": lr}, step=self.state.global_step
        )
        sums, count = self.train_sums.read()
        self.progress.show(self.task.compute(sums, count))

    def _check_finite(self, all_ranks: bool = True) -> list[float]:
        """Read the losses since the last check (one sync); stop at the first that is not finite.

        Under DDP every rank checks at the same steps and learns whether any rank saw a non-finite loss, so
        all stop together (`all_ranks=False`: this rank alone, where the others are not checking)."""
        if not self._pending_losses:
            return [self._last_finite[1]] if self._last_finite else [0.0]
        steps = [s for s, _ in self._pending_losses]
        values = torch.stack([v.float() for _, v in self._pending_losses]).tolist()
        self._pending_losses = []
        here = not all(math.isfinite(v) for v in values)
        if all_ranks and self.dist.ddp and self.dist.sum(int(here)) and not here:
            raise NonFiniteLossError(
                f"the training loss of another process became non-finite by step {steps[-1]} (epoch "
                f"{self.state.epoch + 1}); see its error. Lower optim.lr or set trainer.gradient_clip_val"
            )
        for step, value in zip(steps, values, strict=True):
            if not math.isfinite(value):
                last = (
                    f"last finite loss {self._last_finite[1]:.4g} at step {self._last_finite[0]}"
                    if self._last_finite
                    else "no finite loss before it"
                )
                kept = self.run_dir / "last.ckpt"
                kept_msg = (
                    f"{kept} from epoch {self.state.epoch} is kept" if kept.is_file() else "no checkpoint yet"
                )
                raise NonFiniteLossError(
                    f"training loss became {value} at step {step} (epoch {self.state.epoch + 1}); {last}; "
                    f"{kept_msg}. Lower optim.lr or set trainer.gradient_clip_val"
                )
            self._last_finite = (step, value)
        return values

    def _update_best(self, epoch: int, metrics: dict[str, float]) -> bool:
        if self.monitor not in metrics:
            raise DlrunError(
                f"monitored metric {self.monitor!r} is not logged; available: {', '.join(sorted(metrics))}"
            )
        value = metrics[self.monitor]
        best = self.state.best
        better = best is None or (
            value > best[self.monitor] if self.monitor_mode == "max" else value < best[self.monitor]
        )
        if better:
            self.state.best = {"epoch": epoch} | metrics
        return better

    def _best(self) -> dict[str, float]:
        return {k: v for k, v in (self.state.best or {}).items() if k.startswith("val/")}

    # ---------------------------------------------------------- checkpoints
    def _checkpoint(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.precision.scaler.state_dict(),
            "state": asdict(self.state),
            "train_sums": self._sums_at_step.state_dict() if self.state.batch_in_epoch else None,
            "rng": ckpt_io.rng_state(),
            "config": self.config_yaml,
            # what the weights mean beyond the model config, e.g. a text vocabulary (checked by predict)
            "data": self.data.checkpoint_state() if hasattr(self.data, "checkpoint_state") else None,
            "dlrun_version": __version__,
        }

    def _save_checkpoints(self, epoch: int, improved: bool) -> None:
        """last.ckpt every checkpoint_every_n_epochs and at the end; best.ckpt whenever the monitored metric
        improved, written at the next such epoch from a copy taken when it improved."""
        due = epoch % self.checkpoint_every == 0 or self._finished()
        if improved and not due:
            self._best_pending = ckpt_io.cpu_copy(self._checkpoint()) if self.dist.is_main else None
        if not due:
            return
        self._save(self.run_dir / "last.ckpt")
        if improved:
            self._save(self.run_dir / "best.ckpt")
        elif self._best_pending is not None:
            ckpt_io.save_atomic(self._best_pending, self.run_dir / "best.ckpt")
        self._best_pending = None

    def _save(self, path: Path) -> None:
        if self.dist.is_main:
            ckpt_io.save_atomic(self._checkpoint(), path)

    def _resume_path(self, runs_root) -> Path | None:
        if self.resume in (None, "", False):
            return None
        if str(self.resume) == "auto":
            found = ckpt_io.find_resumable(
                self.run_dir, Path(runs_root) if runs_root else self.run_dir.parent
            )
            if found is None:
                log.info("trainer.resume=auto: no unfinished run found, starting fresh")
            return found
        path = Path(self.resume)
        if path.is_dir():
            path = path / "last.ckpt"
        if not path.is_file():
            raise DlrunError(f"trainer.resume={self.resume}: no checkpoint at {path}")
        return path

    def _load(self, path: Path) -> None:
        ckpt = ckpt_io.load(path)
        ckpt_io.load_model_weights(self.model, ckpt["model"], path, "resume with the run's config")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.precision.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["state"])
        # Mid-epoch sums are rank 0's share (DDP): rank 0 carries them on, the other ranks start from zero.
        if ckpt["train_sums"] is not None and self.dist.is_main:
            self.train_sums.load_state_dict(ckpt["train_sums"], self.device)
        ckpt_io.set_rng_state(ckpt["rng"])
        self.resumed_from = str(path)
        where = f"epoch {self.state.epoch}" + (
            f", batch {self.state.batch_in_epoch}" if self.state.batch_in_epoch else ""
        )
        log.info("resumed from %s (%s, step %d)", path, where, self.state.global_step)

    def _on_interrupt(self) -> None:
        if not self.dist.is_main:
            return
        if not self.save_checkpoints:
            log.warning("interrupted; checkpoints are off, nothing saved")
            return
        try:
            self._check_finite(all_ranks=False)  # rank 0 alone saves on Ctrl-C: no collective here
        except NonFiniteLossError:
            log.warning("interrupted after a non-finite loss; last.ckpt left as it was")
            return
        path = self.run_dir / "last.ckpt"
        self._save(path)
        if self._best_pending is not None:
            ckpt_io.save_atomic(self._best_pending, self.run_dir / "best.ckpt")
        log.warning(
            "interrupted at epoch %d, step %d; resume with trainer.resume=%s",
            self.state.epoch + 1,
            self.state.global_step,
            path,
        )

    # --------------------------------------------------------------- output
    def _summary(self, status: str, wall_time: float) -> dict:
        final = {k: v for k, v in (self.state.history[-1] if self.state.history else {}).items()}
        return {
            "status": status,
            "epochs": self.state.epoch,
            "global_step": self.state.global_step,
            "monitor": self.monitor,
            "best": self.state.best,
            "final": final,
            "num_params": self.num_params,
            "wall_time_s": wall_time,
            "train_examples_per_s": (
                self._session_examples / self._session_train_time if self._session_train_time else 0.0
            ),
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "precision": self.precision.name,
            "compile": bool(self.compile),
            "channels_last": self.channels_last,
            "run_dir": str(self.run_dir),
            "best_ckpt": str(self.run_dir / "best.ckpt") if (self.run_dir / "best.ckpt").is_file() else None,
            "resumed_from": self.resumed_from,
            "stopped_early": self.stopped_early,
            "history": self.state.history,
        }
