"""The optimizers and schedulers of a run, and the one way they step.

Automatic tasks: the engine calls `backward` per micro-batch and `step_all` at each accumulation boundary.
Manual tasks (e.g. a GAN's alternating updates) call `zero_grad(name)`, `backward(loss)` and `step(name)` from
their training_step; the engine then calls `end_step`. Either way the grad scaler, clipping and the
schedulers behave the same, and `state_dict` holds every optimizer, scheduler and the scaler.
"""

from torch import Tensor, nn
from torch.optim import Optimizer

from dlrun.engine.device import Precision
from dlrun.errors import DlrunError


class Optimization:
    def __init__(
        self,
        optimizers: dict[str, Optimizer],
        schedulers: dict,
        interval: str,
        precision: Precision,
        clip_val: float | None = None,
        clip_algorithm: str = "norm",
        accumulate: int = 1,
    ):
        if not optimizers:
            raise DlrunError("the task configured no optimizer")
        unknown = set(schedulers) - set(optimizers)
        if unknown:
            raise DlrunError(f"schedulers {sorted(unknown)} name no optimizer; use {sorted(optimizers)}")
        if interval not in ("epoch", "step"):
            raise DlrunError(f"sched.interval={interval!r}; use epoch or step")
        self.optimizers, self.schedulers, self.interval = optimizers, schedulers, interval
        self.scaler = precision.scaler
        self.clip_val, self.clip_algorithm, self.accumulate = clip_val, clip_algorithm, accumulate

    @property
    def lr(self) -> float:
        """The first optimizer's first group's learning rate (what the logs show as `lr`)."""
        return next(iter(self.optimizers.values())).param_groups[0]["lr"]

    def __getitem__(self, name: str) -> Optimizer:
        if name not in self.optimizers:
            raise DlrunError(f"no optimizer {name!r}; the task configured {sorted(self.optimizers)}")
        return self.optimizers[name]

    # ------------------------------------------------------------ stepping
    def backward(self, loss: Tensor) -> None:
        self.scaler.scale(loss / self.accumulate).backward()

    def zero_grad(self, name: str = "default") -> None:
        self[name].zero_grad(set_to_none=True)

    def step(self, name: str = "default") -> None:
        """One optimizer's update: unscale, clip its parameters' gradients, step (skipped by the scaler on
        inf/NaN gradients)."""
        optimizer = self[name]
        if self.clip_val is not None:
            self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if self.clip_algorithm == "norm":
                nn.utils.clip_grad_norm_(params, self.clip_val)
            else:
                nn.utils.clip_grad_value_(params, self.clip_val)
        self.scaler.step(optimizer)

    def step_all(self) -> None:
        """The automatic update: every optimizer steps, then gradients are cleared."""
        for name, optimizer in self.optimizers.items():
            self.step(name)
            optimizer.zero_grad(set_to_none=True)
        self.end_step()

    def end_step(self) -> None:
        """After one iteration's optimizer steps: the scaler updates once; per-step schedulers step."""
        self.scaler.update()
        if self.interval == "step":
            self.step_schedulers()

    def end_epoch(self) -> None:
        if self.interval == "epoch":
            self.step_schedulers()

    def step_schedulers(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.step()

    # ----------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        return {
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, ckpt: dict) -> None:
        """From a checkpoint; one written before tasks could have several optimizers ("optimizer",
        "scheduler") loads as the default one."""
        optimizers = ckpt.get("optimizers") or {"default": ckpt.get("optimizer")}
        schedulers = ckpt.get("schedulers")
        if schedulers is None:
            schedulers = {"default": ckpt["scheduler"]} if ckpt.get("scheduler") is not None else {}
        if set(optimizers) != set(self.optimizers):
            raise DlrunError(
                f"the checkpoint holds optimizers {sorted(optimizers)}; "
                f"this task has {sorted(self.optimizers)}"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(optimizers[name])
        for name, scheduler in self.schedulers.items():
            if name in schedulers:
                scheduler.load_state_dict(schedulers[name])
        self.scaler.load_state_dict(ckpt["scaler"])
