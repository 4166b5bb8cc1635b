"""mode=lr_find: the learning-rate range test (Smith 2015; fastai's and Lightning's lr_find).

The lr grows exponentially from `min_lr` to `max_lr` over `num_steps` training steps; the loss is smoothed (an
exponential moving average, bias-corrected) and the test stops once it exceeds `diverge` times its best. The
range is the smoothed loss's valley (fastai's `valley`: its longest decreasing run), the suggestion halfway
down it. Writes lr_find.png and lr_find.json. It trains a copy of the model with its own optimizer:
the configured ones stay untouched.

Options: +lr_find.num_steps=100 +lr_find.min_lr=1e-5 +lr_find.max_lr=10 +lr_find.beta=0.9 +lr_find.diverge=4
"""

import copy
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from dlrun.atomic import replacing
from dlrun.engine.device import Precision, select_device
from dlrun.engine.seed import seed_everything
from dlrun.engine.summary import write_json
from dlrun.errors import DlrunError
from dlrun.run import build, model_node

log = logging.getLogger("dlrun")

DEFAULTS = {"num_steps": 100, "min_lr": 1e-5, "max_lr": 10.0, "beta": 0.9, "diverge": 4.0}
SKIP_START = 5  # fewer points than SKIP_START + 3: no suggestion


@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]  # smoothed
    raw_losses: list[float]
    suggestion: float | None  # halfway down the valley
    low: float | None  # the valley: where the smoothed loss starts falling ...
    high: float | None  # ... and where it stops
    stopped: str  # why the test ended


def run(cfg: DictConfig) -> RangeTest:
    opts = DEFAULTS | dict(cfg.get("lr_find") or {})
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise DlrunError(f"lr_find.{sorted(unknown)[0]} is not an option; use {', '.join(DEFAULTS)}")
    seed_everything(cfg.seed)
    device = select_device(cfg.trainer.device)
    data = build(cfg.data, "data")
    data.setup(device, cfg.seed)
    model = build(model_node(cfg), "model", **data.model_kwargs).to(device)
    task = build(cfg.task, "task")
    optimizer = build(cfg.optim, "optim")
    result = lr_range_test(
        model, task, data, optimizer, Precision(cfg.trainer.precision, device), **_typed(opts)
    )
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "lr_find.json", asdict(result))
    plot(result, out / "lr_find.png", f"{cfg.name}: lr range test")
    if result.suggestion is None:
        log.warning("lr_find: no suggestion (%s); widen min_lr/max_lr or raise num_steps", result.stopped)
    else:
        log.info(
            "lr_find: %d steps, %s; the smoothed loss falls from lr %.3g to %.3g",
            len(result.lrs),
            result.stopped,
            result.low,
            result.high,
        )
        print(f"suggested optim.lr={result.suggestion:.3g}  (range {result.low:.3g}–{result.high:.3g})")
    log.info("outputs: %s (lr_find.png, lr_find.json)", out)
    return result


def _typed(opts: dict) -> dict:
    out = {k: float(v) for k, v in opts.items()}
    out["num_steps"] = int(opts["num_steps"])
    if out["num_steps"] < 2 or not 0 < out["min_lr"] < out["max_lr"] or not 0 <= out["beta"] < 1:
        raise DlrunError(
            f"lr_find options {opts} are out of range; "
            "need num_steps >= 2, 0 < min_lr < max_lr, 0 <= beta < 1"
        )
    return out


def lr_range_test(
    model: torch.nn.Module,
    task,
    data,
    optimizer,
    precision: Precision,
    num_steps: int = 100,
    min_lr: float = 1e-5,
    max_lr: float = 10.0,
    beta: float = 0.9,
    diverge: float = 4.0,
) -> RangeTest:
    """Train a copy of `model` with `optimizer` (a partial, as the optim group builds it) at lr
    min_lr * (max_lr / min_lr) ** (i / (num_steps - 1)) for step i; `model` itself is not changed."""
    if not task.automatic_optimization:
        raise DlrunError(
            f"mode=lr_find needs a task with one automatic optimizer; {type(task).__name__} has its own"
        )
    work = copy.deepcopy(model).train()
    optimizers, _ = task.configure_optimizers(work, optimizer, None)
    if len(optimizers) != 1:
        raise DlrunError(f"mode=lr_find needs one optimizer; the task configured {sorted(optimizers)}")
    opt = next(iter(optimizers.values()))
    scaler = torch.amp.GradScaler(precision.device.type, enabled=precision.name == "16-mixed")
    lrs, smoothed, raw = [], [], []
    average, best, stopped = 0.0, math.inf, f"reached max_lr after {num_steps} steps"
    for step, batch in enumerate(batches(data)):
        if step == num_steps:
            break
        lr = min_lr * (max_lr / min_lr) ** (step / (num_steps - 1))
        for group in opt.param_groups:
            group["lr"] = lr
        with precision.autocast():
            loss, _, _ = task.training_step(work, batch)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        value = loss.item()
        if not math.isfinite(value):
            stopped = f"the loss became {value} at lr {lr:.3g}"
            break
        average = beta * average + (1 - beta) * value
        loss_s = average / (1 - beta ** (step + 1))
        lrs.append(lr)
        smoothed.append(loss_s)
        raw.append(value)
        best = min(best, loss_s)
        if loss_s > diverge * best:
            stopped = f"the loss diverged at lr {lr:.3g} ({diverge:g}× its best)"
            break
    suggestion, low, high = suggest(lrs, smoothed)
    return RangeTest(lrs, smoothed, raw, suggestion, low, high, stopped)


def batches(data):
    """Training batches, epoch after epoch, for as many steps as the test takes."""
    epoch = 1
    while True:
        count = 0
        for batch in data.train_loader(epoch=epoch):
            count += 1
            yield batch
        if count == 0:
            raise DlrunError(f"data {type(data).__name__} yields no training batches")
        epoch += 1


def suggest(lrs: list[float], losses: list[float]) -> tuple[float | None, float | None, float | None]:
    """fastai's `valley`: the longest stretch over which the smoothed loss keeps falling (its longest
    decreasing subsequence); the suggestion sits halfway down it (a third and a sixth of its steps).
    Returns (suggestion, valley start, valley bottom)."""
    n = len(losses)
    if n < SKIP_START + 3:
        return None, None, None
    run = [1] * n  # the longest decreasing subsequence ending at i
    end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[end]:
            end = i
    start = end - run[end] + 1
    if run[end] < 3:
        return None, None, None
    third = (end - start) / 3
    at = start + int(third) + int(third / 2)
    return lrs[at], lrs[start], lrs[end]


def plot(result: RangeTest, path: Path, title: str) -> None:
    from matplotlib.figure import Figure  # Agg through the OO API, as curves.png

    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(result.lrs, result.raw_losses, color="0.8", linewidth=0.8, label="loss")
    ax.plot(result.lrs, result.losses, color="C0", label="smoothed loss")
    if result.suggestion is not None:
        ax.axvspan(result.low, result.high, color="C2", alpha=0.12, label="valley")
        at = result.lrs.index(result.suggestion)
        ax.plot(
            [result.suggestion],
            [result.losses[at]],
            "o",
            color="C3",
            label=f"suggestion {result.suggestion:.3g}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    if result.losses:  # the smoothed curve fills the plot; raw spikes may leave it
        low, high = min(result.losses), max(result.losses)
        ax.set_ylim(low - 0.1 * (high - low) - 1e-3, high + 0.3 * (high - low) + 1e-3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
