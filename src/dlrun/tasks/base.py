"""What the engine asks of a task. Subclass Task, implement `step` and `compute`; override hooks as needed."""

from torch import Tensor, nn
from torch.optim import Optimizer

from dlrun.engine.contracts import FitContext

StepResult = tuple[Tensor, dict[str, Tensor], int]


class Task:
    """The engine's contract with a task.

    - `step(model, batch) -> (loss, stats, count)`: `stats` are summed, detached tensors (the engine adds
      them up on the device and never syncs per step), `count` the number of examples (or tokens) as an int.
      `training_step` and `validation_step` default to it.
    - `compute(sums, count) -> metrics`: the summed stats as metrics (the engine prefixes train/, val/).
    - `monitor`/`mode`: the metric that picks best.ckpt and is returned to sweepers, and its direction
      (`monitor = None`: no best epoch).
    - `configure_optimizers(model, optimizer, scheduler)`: the optimizers (and schedulers) by name. The
      default is the one optimizer of the `optim` group over every parameter, with the `sched` scheduler.
    - `automatic_optimization = False`: the task runs its own updates. Its
      `training_step(model, batch, optim)` receives a `dlrun.engine.optimization.Optimization` and calls
      `optim.zero_grad(name)`, `optim.backward(loss)` and `optim.step(name)`; the engine still owns
      precision and grad scaling, clipping, the NaN watch and checkpointing every optimizer, scheduler and
      the scaler.
    - Hooks, all no-ops here, get the model and a FitContext (run_dir, logger, data, epoch):
      on_fit_start, on_train_epoch_start, on_validation_start, on_epoch_end, on_fit_end.
    - `predict(model, data, run_dir)`: mode=predict; tasks without it have no predict mode.
    - `chance_loss(model, batch)`: the training loss of a model that has learned nothing from its inputs,
      where the task has one (classification: ln of the number of classes); None here.
    """

    monitor: str | None = "val/loss"
    mode: str = "min"
    automatic_optimization: bool = True

    def step(self, model: nn.Module, batch) -> StepResult:
        raise NotImplementedError

    def training_step(self, model: nn.Module, batch) -> StepResult:
        return self.step(model, batch)

    def validation_step(self, model: nn.Module, batch) -> StepResult:
        return self.step(model, batch)

    @staticmethod
    def compute(sums: dict[str, float], count: int) -> dict[str, float]:
        raise NotImplementedError

    def configure_optimizers(self, model: nn.Module, optimizer, scheduler=None) -> tuple[dict, dict]:
        """(optimizers by name, schedulers by name); `optimizer`/`scheduler` are the config's partials."""
        opt: Optimizer = optimizer(model.parameters())
        return {"default": opt}, ({"default": scheduler(opt)} if scheduler is not None else {})

    def chance_loss(self, model: nn.Module, batch) -> float | None:
        """The loss of a uniform guess on `batch` (mode=lr_find: a test whose loss never gets below it saw
        no learning). None: the task has no such level."""
        return None

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, model: nn.Module, ctx: FitContext) -> None:
        pass

    def on_train_epoch_start(self, model: nn.Module, ctx: FitContext) -> None:
        pass

    def on_validation_start(self, model: nn.Module, ctx: FitContext) -> None:
        pass

    def on_epoch_end(self, model: nn.Module, ctx: FitContext) -> None:
        pass

    def on_fit_end(self, model: nn.Module, ctx: FitContext) -> None:
        """After the last epoch, on rank 0 only: end-of-run reports (files go to ctx.run_dir)."""
