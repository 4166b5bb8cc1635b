import csv
import logging
import math
from pathlib import Path
from typing import Annotated, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dlrun.atomic import replacing
from dlrun.engine.contracts import FitContext
from dlrun.errors import DlrunError
from dlrun.ranges import Min
from dlrun.tasks.base import Task

log = logging.getLogger("dlrun")


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's classifier: what it names through head_parameters(), else its last nn.Linear."""
    if hasattr(model, "head_parameters"):
        return list(model.head_parameters())
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise DlrunError(f"task.head_lr_mult: {type(model).__name__} has no nn.Linear head; set it to 1")
    return list(linears[-1].parameters())


class ClassificationTask(Task):
    """Batches of (inputs, class indices); cross-entropy loss; top-1 accuracy. `head_lr_mult`: the book's
    fine-tuning (13.2), the classifier learning at that multiple of optim.lr and the rest at optim.lr.
    `loss_reduction=sum`: backpropagate the batch's summed loss, as the book's train_ch13 does (the logged
    loss stays the mean per example).

    Each validation counts (true, predicted) pairs on the device; at the end of the fit the last one is
    written as confusion_matrix.csv and confusion_matrix.png (class names from the data's `class_names`)."""

    def __init__(
        self,
        monitor: str = "val/acc",
        mode: str = "max",
        label_smoothing: float = 0.0,
        head_lr_mult: Annotated[float, Min(0)] = 1.0,
        loss_reduction: Literal["mean", "sum"] = "mean",
    ):
        self.monitor = monitor
        self.mode = mode
        self.label_smoothing = label_smoothing
        self.head_lr_mult = head_lr_mult
        self.loss_reduction = loss_reduction
        self.confusion: Tensor | None = None  # (true, predicted) counts of the latest validation

    def configure_optimizers(self, model: nn.Module, optimizer, scheduler=None) -> tuple[dict, dict]:
        if self.head_lr_mult == 1:
            return super().configure_optimizers(model, optimizer, scheduler)
        lr = getattr(optimizer, "keywords", {}).get("lr")
        if lr is None:
            raise DlrunError("task.head_lr_mult needs an optimizer with an lr (optim.lr)")
        head = head_parameters(model)
        ids = {id(p) for p in head}
        body = [p for p in model.parameters() if id(p) not in ids]
        opt = optimizer([{"params": body}, {"params": head, "lr": lr * self.head_lr_mult}])
        return {"default": opt}, ({"default": scheduler(opt)} if scheduler is not None else {})

    def forward(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int, Tensor, Tensor]:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        n = y.shape[0]
        stats = {"loss": loss.detach() * n, "correct": (logits.argmax(dim=1) == y).sum()}
        return (loss * n if self.loss_reduction == "sum" else loss), stats, n, logits, y

    def step(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int]:
        return self.forward(model, batch)[:3]

    def chance_loss(self, model: nn.Module, batch) -> float | None:
        """ln(classes), the cross-entropy of a uniform guess (label smoothing leaves it so), times the batch
        size under loss_reduction=sum. The number of classes is read off one example's logits."""
        x, y = batch
        if not isinstance(x, Tensor):
            return None
        was_training = model.training
        model.eval()  # no BatchNorm statistics move
        with torch.no_grad():
            logits = model(x[:1])
        model.train(was_training)
        if logits.dim() != 2 or logits.shape[1] < 2:
            return None
        return math.log(logits.shape[1]) * (len(y) if self.loss_reduction == "sum" else 1)

    def on_validation_start(self, model: nn.Module, ctx: FitContext) -> None:
        self.confusion = None

    def validation_step(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int]:
        loss, stats, n, logits, y = self.forward(model, batch)
        if y.dim() == 1 and logits.dim() == 2:
            k = logits.shape[1]
            counts = torch.bincount(y * k + logits.argmax(dim=1), minlength=k * k).reshape(k, k)
            self.confusion = counts if self.confusion is None else self.confusion + counts
        return loss, stats, n

    def on_fit_end(self, model: nn.Module, ctx: FitContext) -> None:
        if self.confusion is None:
            return
        counts = self.confusion.cpu()
        names = getattr(ctx.data, "class_names", None) or getattr(ctx.data, "classes", None)
        if not names or len(names) != counts.shape[0]:
            names = [str(i) for i in range(counts.shape[0])]
        run_dir = Path(ctx.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        with replacing(run_dir / "confusion_matrix.csv", ".csv") as tmp, open(tmp, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["true \\ predicted", *names])
            writer.writerows([name, *row] for name, row in zip(names, counts.tolist(), strict=True))
        # Under DDP each rank validated its own shard and this hook runs on rank 0 only.
        shard = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
        title = "validation (rank 0's shard)" if shard else "validation"
        plot_confusion(counts, [str(n) for n in names], run_dir / "confusion_matrix.png", title)

    @staticmethod
    def compute(sums: dict[str, float], count: int) -> dict[str, float]:
        if count == 0:
            return {}
        return {"loss": sums["loss"] / count, "acc": sums["correct"] / count}

    @torch.inference_mode()
    def predict(self, model: nn.Module, data, run_dir: Path) -> Path:
        """mode=predict: class probabilities for the data's test images, written by the data module in its
        competition's format (run_dir/submission.csv)."""
        if not hasattr(data, "test_loader") or not hasattr(data, "write_submission"):
            raise DlrunError(
                f"{type(data).__name__} has no test set to predict (use data=kaggle_cifar10 or kaggle_dog)"
            )
        model.eval()
        probs = [F.softmax(model(x).float(), dim=1).cpu() for x, _ in data.test_loader()]
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = data.write_submission(torch.cat(probs), run_dir / "submission.csv")
        log.info("wrote %d predictions to %s", sum(len(p) for p in probs), path)
        return path


def plot_confusion(counts: Tensor, names: list[str], path: Path, title: str = "validation") -> None:
    """Rows the true class, columns the predicted one, shaded by the share of the row; the counts written in
    the cells and the names on the axes while there are few enough classes to read them."""
    from matplotlib.figure import Figure

    k = counts.shape[0]
    shares = counts.double() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = min(3 + 0.45 * k, 12)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    if k <= 30:
        ax.set_xticks(range(k), names, rotation=90 if max(map(len, names)) > 3 else 0)
        ax.set_yticks(range(k), names)
    if k <= 15:
        for i in range(k):
            for j in range(k):
                color = "white" if shares[i, j] > 0.5 else "black"
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", color=color, fontsize=8)
    total = int(counts.sum())
    ax.set_title(f"{title}: {int(counts.trace())}/{total} right", fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    with replacing(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
