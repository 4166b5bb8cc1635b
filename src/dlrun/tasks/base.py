"""What the engine asks of a task. Subclass Task, implement `step` and `compute`; add hooks as needed."""

from torch import Tensor, nn


class Task:
    """The engine's contract.

    - `step(model, batch) -> (loss, stats, count)`: `stats` are summed, detached tensors (the engine adds
      them up on the device and never syncs per step), `count` the number of examples (or tokens) as an int.
    - `compute(sums, count) -> metrics`: the summed stats as metrics (the engine prefixes train/, val/).
    - `monitor`/`mode`: the metric that picks best.ckpt and is returned to sweepers, and its direction.
    - Optional hooks: on_fit_start(model, data), on_train_epoch_start(model), on_validation_start(model),
      on_epoch_end(model, epoch, logger), on_fit_end(model, logger), predict(model, data, run_dir).
    """

    monitor: str = "val/loss"
    mode: str = "min"

    def step(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int]:
        raise NotImplementedError

    def training_step(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int]:
        return self.step(model, batch)

    def validation_step(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int]:
        return self.step(model, batch)

    @staticmethod
    def compute(sums: dict[str, float], count: int) -> dict[str, float]:
        raise NotImplementedError
