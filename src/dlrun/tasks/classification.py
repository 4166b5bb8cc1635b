from torch import Tensor, nn
from torch.nn import functional as F

from dlrun.tasks.base import Task


class ClassificationTask(Task):
    """Batches of (inputs, class indices); cross-entropy loss; top-1 accuracy."""

    def __init__(self, monitor: str = "val/acc", mode: str = "max", label_smoothing: float = 0.0):
        self.monitor = monitor
        self.mode = mode
        self.label_smoothing = label_smoothing

    def step(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int]:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        n = y.shape[0]
        stats = {"loss": loss.detach() * n, "correct": (logits.argmax(dim=1) == y).sum()}
        return loss, stats, n

    @staticmethod
    def compute(sums: dict[str, float], count: int) -> dict[str, float]:
        if count == 0:
            return {}
        return {"loss": sums["loss"] / count, "acc": sums["correct"] / count}
