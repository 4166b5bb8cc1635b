import logging
from pathlib import Path
from typing import Annotated, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

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
    loss stays the mean per example)."""

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

    def step(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int]:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        n = y.shape[0]
        stats = {"loss": loss.detach() * n, "correct": (logits.argmax(dim=1) == y).sum()}
        return (loss * n if self.loss_reduction == "sum" else loss), stats, n

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
