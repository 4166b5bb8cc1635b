"""mode=lr_find: the learning-rate range test (Smith 2015; fastai's and Lightning's lr_find).

The lr grows exponentially from `min_lr` to `max_lr` over `num_steps` training steps; the loss is smoothed (an
exponential moving average, bias-corrected, beta 0.98 as in fastai and Lightning) and the test stops once it
exceeds `diverge` times its best (4, as both). The suggestion is fastai's default, `valley`, on the smoothed
curve less its first tenth and last five points (as fastai trims it): the range is the valley (the longest
decreasing run), the suggestion lies halfway down it. fastai's `steep` (the steepest fall per log-lr) and
`minimum` (a tenth of the lr at the smoothed minimum) go to lr_find.json beside it.

A test whose smoothed loss never gets below the task's chance level (a classifier's ln(classes)) saw the model
learn nothing from its inputs: every lr left it where a uniform guess is, so the curve cannot rank lrs. Then
there is no suggestion, and the warning says to run the test longer (the book's sigmoid LeNet sits at chance
for the first ~1,700 steps of a test; docs/lr_find.md).

Writes lr_find.png and lr_find.json. It trains a copy of the model with its own optimizer, its RNG draws
forked: the configured model, optimizer and random state stay untouched.

Options (++ adds or overrides): ++lr_find.num_steps=100 ++lr_find.min_lr=1e-5 ++lr_find.max_lr=10
++lr_find.beta=0.98 ++lr_find.diverge=4
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

DEFAULTS = {"num_steps": 100, "min_lr": 1e-5, "max_lr": 10.0, "beta": 0.98, "diverge": 4.0}
SKIP_END = 5  # fastai drops the last 5 points and the first tenth before suggesting
MIN_POINTS = 8  # fewer left: no suggestion
LEARNED = 0.99  # the smoothed loss must get below 0.99 × chance: more than a plateau's noise


@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]  # smoothed
    raw_losses: list[float]
    suggestion: float | None  # fastai's valley: halfway down it
    low: float | None  # the valley: where the smoothed loss starts falling ...
    high: float | None  # ... and where it stops
    stopped: str  # why the test ended
    steep: float | None = None  # fastai's steep: the steepest fall of the smoothed loss per log-lr
    minimum: float | None = None  # fastai's minimum: a tenth of the lr at the smoothed loss's minimum
    chance: float | None = None  # the task's loss for a uniform guess; None where it has none


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
    plot(result, out / "lr_find.png", f"{cfg.name}: lr range test", configured=cfg.optim.get("lr"))
    if result.suggestion is None and not learned(result):
        log.warning(
            "lr_find: no suggestion: the smoothed loss never got below chance (%.4g, a uniform guess) in %d "
            "steps, so the model learned nothing the test could rank lrs by; run it longer: "
            "++lr_find.num_steps=%d or more",
            result.chance,
            len(result.lrs),
            4 * len(result.lrs),
        )
    elif result.suggestion is None:
        log.warning("lr_find: no suggestion (%s); widen min_lr/max_lr or raise num_steps", result.stopped)
    else:
        log.info(
            "lr_find: %d steps, %s; the smoothed loss falls from lr %.3g to %.3g",
            len(result.lrs),
            result.stopped,
            result.low,
            result.high,
        )
        log.info("lr_find: fastai's steep %.3g, minimum %.3g (lr_find.json)", result.steep, result.minimum)
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
    beta: float = 0.98,
    diverge: float = 4.0,
) -> RangeTest:
    """Train a copy of `model` with `optimizer` (a partial, as the optim group builds it) at lr
    min_lr * (max_lr / min_lr) ** (i / (num_steps - 1)) for step i; `model` itself is not changed."""
    if not task.automatic_optimization:
        raise DlrunError(
            f"mode=lr_find needs a task with one automatic optimizer; {type(task).__name__} has its own"
        )
    with torch.random.fork_rng(devices=[precision.device] if precision.device.type == "cuda" else []):
        return _range_test(model, task, data, optimizer, precision, num_steps, min_lr, max_lr, beta, diverge)


def _range_test(
    model, task, data, optimizer, precision, num_steps, min_lr, max_lr, beta, diverge
) -> RangeTest:
    work = copy.deepcopy(model).train()
    optimizers, _ = task.configure_optimizers(work, optimizer, None)
    if len(optimizers) != 1:
        raise DlrunError(f"mode=lr_find needs one optimizer; the task configured {sorted(optimizers)}")
    opt = next(iter(optimizers.values()))
    scaler = torch.amp.GradScaler(precision.device.type, enabled=precision.name == "16-mixed")
    lrs, smoothed, raw = [], [], []
    average, best, stopped = 0.0, math.inf, f"reached max_lr after {num_steps} steps"
    chance = None
    for step, batch in enumerate(batches(data)):
        if step == num_steps:
            break
        if step == 0 and hasattr(task, "chance_loss"):
            chance = task.chance_loss(work, batch)
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
    steep, minimum = steep_and_minimum(lrs, smoothed)
    result = RangeTest(lrs, smoothed, raw, None, None, None, stopped, steep, minimum, chance)
    if learned(result):
        result.suggestion, result.low, result.high = suggest(lrs, smoothed)
    return result


def learned(result: RangeTest) -> bool:
    """Whether the smoothed loss got clearly below the task's chance level (True for tasks without one)."""
    return result.chance is None or (bool(result.losses) and min(result.losses) < LEARNED * result.chance)


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


def trimmed(lrs: list[float], losses: list[float]) -> tuple[list[float], list[float]]:
    """The points fastai suggests from: all but the first tenth and the last SKIP_END."""
    start = len(lrs) // 10
    return lrs[start : len(lrs) - SKIP_END], losses[start : len(losses) - SKIP_END]


def suggest(lrs: list[float], losses: list[float]) -> tuple[float | None, float | None, float | None]:
    """fastai's `valley` on the trimmed curve: the longest stretch over which the smoothed loss keeps falling
    (its longest decreasing subsequence, which starts `run` points before its end, as fastai counts it);
    the suggestion sits a third and a sixth of the way down it. Returns (suggestion, valley start, bottom)."""
    lrs, losses = trimmed(lrs, losses)
    n = len(losses)
    if n < MIN_POINTS:
        return None, None, None
    run = [1] * n  # the longest decreasing subsequence ending at i
    end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[end]:
            end = i
    if run[end] < 3:
        return None, None, None
    start = max(end - run[end], 0)
    third = (end - start) / 3
    at = start + int(third) + int(third / 2)
    return lrs[at], lrs[start], lrs[end]


def steep_and_minimum(lrs: list[float], losses: list[float]) -> tuple[float | None, float | None]:
    """fastai's `steep` (the lr where the smoothed loss falls fastest per unit of log-lr) and `minimum` (a
    tenth of the lr at the smoothed loss's minimum), on the trimmed curve."""
    lrs, losses = trimmed(lrs, losses)
    if len(losses) < MIN_POINTS:
        return None, None
    slopes = [
        (losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in range(len(lrs) - 1)
    ]
    steep = lrs[min(range(len(slopes)), key=slopes.__getitem__)]
    lowest = lrs[min(range(len(losses)), key=losses.__getitem__)]
    return steep, lowest / 10


def plot(result: RangeTest, path: Path, title: str, configured: float | None = None) -> None:
    """Loss against lr; the valley, the suggestion and (dashed) the configured optim.lr marked."""
    from matplotlib.figure import Figure  # Agg through the OO API, as curves.png

    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(result.lrs, result.raw_losses, color="0.8", linewidth=0.8, label="loss")
    ax.plot(result.lrs, result.losses, color="C0", label="smoothed loss")
    if result.chance is not None:
        ax.axhline(result.chance, color="C1", linestyle=":", linewidth=1, label=f"chance {result.chance:.3g}")
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
    if configured is not None and result.lrs and result.lrs[0] <= configured <= result.lrs[-1] * 10:
        ax.axvline(configured, color="0.3", linestyle="--", linewidth=0.8, label=f"optim.lr={configured:g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    if result.losses:  # the smoothed curve (and chance) fill the plot; raw spikes may leave it
        shown = result.losses + ([result.chance] if result.chance is not None else [])
        low, high = min(shown), max(shown)
        ax.set_ylim(low - 0.1 * (high - low) - 1e-3, high + 0.3 * (high - low) + 1e-3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
