"""Semantic segmentation (13.9-13.11): per-pixel cross-entropy (the book's mean over each image's pixels,
then over the batch), pixel accuracy, and mean IoU over the classes present (summed as a confusion matrix's
per-class intersections and unions, so it adds up over batches and ranks)."""

import logging
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dlrun.engine.contracts import FitContext
from dlrun.errors import DlrunError
from dlrun.tasks.base import Task

log = logging.getLogger("dlrun")


class SegmentationTask(Task):
    def __init__(self, num_drawn: int = 4, monitor: str | None = "val/miou", mode: str = "max"):
        self.num_drawn, self.monitor, self.mode = num_drawn, monitor, mode

    @staticmethod
    def _logits(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        logits = model(x)
        if logits.ndim != 4 or logits.shape[-2:] != y.shape[-2:]:
            raise DlrunError(
                f"task=segmentation needs per-pixel logits (N, classes, H, W) of the label's size "
                f"{tuple(y.shape[-2:])}; the model gave {tuple(logits.shape)} (model=fcn needs H and W "
                "divisible by 32)"
            )
        return logits.float()

    def step(self, model: nn.Module, batch):
        x, y = batch
        y = y.long()
        logits = self._logits(model, x, y)
        n, num_classes = y.shape[0], logits.shape[1]
        loss = F.cross_entropy(logits, y, reduction="none").mean(dim=(1, 2)).mean()
        pred = logits.argmax(dim=1)
        stats = {
            "loss": loss.detach() * n,
            "correct": (pred == y).sum(),
            "pixels": torch.tensor(float(y.numel()), device=y.device),
        }
        both = torch.bincount((y * num_classes + pred).reshape(-1), minlength=num_classes**2)
        confusion = both[: num_classes**2].reshape(num_classes, num_classes).float()
        inter = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - inter
        for c in range(num_classes):
            stats[f"inter_{c}"], stats[f"union_{c}"] = inter[c], union[c]
        return loss, stats, n

    @staticmethod
    def compute(sums: dict[str, float], count: int) -> dict[str, float]:
        if count == 0:
            return {}
        num_classes = sum(1 for k in sums if k.startswith("union_"))
        ious = [sums[f"inter_{c}"] / sums[f"union_{c}"] for c in range(num_classes) if sums[f"union_{c}"] > 0]
        return {
            "loss": sums["loss"] / count,
            "acc": sums["correct"] / sums["pixels"],
            "miou": sum(ious) / len(ious) if ious else 0.0,
        }

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def draw(self, model: nn.Module, data, folder: Path, num: int) -> int:
        """folder/<i>.png: image | predicted classes | true classes, colour-mapped by data.palette."""
        from PIL import Image

        was_training = model.training
        model.eval()
        folder.mkdir(parents=True, exist_ok=True)
        palette = torch.as_tensor(data.palette, dtype=torch.uint8)
        index = 0
        for x, y in data.val_loader():
            pred = self._logits(model, x, y).argmax(dim=1).cpu()
            for image, p, t in zip(data.unnormalize(x).cpu(), pred, y.cpu().long(), strict=True):
                if index >= num:
                    break
                picture = (image.clamp(0, 1) * 255).byte().permute(1, 2, 0)
                colours = [palette[p.clamp(max=len(palette) - 1)], palette[t.clamp(max=len(palette) - 1)]]
                row = torch.cat([picture, *colours], dim=1).numpy()
                Image.fromarray(row).save(folder / f"{index:03d}.png")
                index += 1
            if index >= num:
                break
        model.train(was_training)
        return index

    def on_fit_end(self, model: nn.Module, ctx: FitContext) -> None:
        if self.num_drawn:
            count = self.draw(model, ctx.data, Path(ctx.run_dir) / "segmentation", self.num_drawn)
            log.info("segmentation: %s (%d images: image | prediction | truth)", ctx.run_dir, count)

    def predict(self, model: nn.Module, data, run_dir: Path) -> None:
        count = self.draw(model, data, Path(run_dir) / "segmentation", max(self.num_drawn, 1))
        log.info(
            "segmentation: %s (%d images: image | prediction | truth)", Path(run_dir) / "segmentation", count
        )
