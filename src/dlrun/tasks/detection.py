"""Object detection as the book's SSD (13.7): each anchor is labelled from the ground truth (background or
a class, and the offsets of its box); the loss is per-anchor cross-entropy plus L1 on the offsets of the
anchors that hold an object (both averaged per image, as the book's calc_loss).

Metrics: the book's `class_err` (wrong anchor classes / anchors) and `bbox_mae` (masked offset L1 / offset
entries), and on validation `map50`: mean average precision at IoU 0.5 over the book's multibox_detection
output (VOC matching: by confidence, each ground-truth box matched once; all-point interpolated AP).
AP is summed over batches as per-class histograms of true and false positives over `ap_bins` confidence
bins, so it adds up across batches and ranks like every other stat; its thresholds are the bin edges.
"""

import logging
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dlrun.engine.contracts import FitContext
from dlrun.errors import DlrunError
from dlrun.tasks.anchors import box_iou, multibox_detection, multibox_target
from dlrun.tasks.base import Task

log = logging.getLogger("dlrun")


class DetectionTask(Task):
    def __init__(
        self,
        iou_threshold: float = 0.5,
        nms_threshold: float = 0.5,
        pos_threshold: float = 0.009999999,
        map_iou: float = 0.5,
        max_detections: int = 100,
        ap_bins: int = 100,
        draw_threshold: float = 0.9,
        num_drawn: int = 8,
        monitor: str | None = "val/map50",
        mode: str = "max",
    ):
        self.iou_threshold, self.nms_threshold = iou_threshold, nms_threshold
        self.pos_threshold = pos_threshold
        self.map_iou, self.max_detections, self.ap_bins = map_iou, max_detections, ap_bins
        self.draw_threshold, self.num_drawn = draw_threshold, num_drawn
        self.monitor, self.mode = monitor, mode

    @staticmethod
    def _outputs(model: nn.Module, x: Tensor):
        out = model(x)
        if not (isinstance(out, tuple) and len(out) == 3):
            raise DlrunError(
                f"task=detection needs a model that returns (anchors, class logits, offsets), such as "
                f"model=tiny_ssd; {type(model).__name__} does not"
            )
        anchors, cls_preds, bbox_preds = out
        return anchors, cls_preds.float(), bbox_preds.float()

    def losses(self, model: nn.Module, batch):
        x, labels = batch
        anchors, cls_preds, bbox_preds = self._outputs(model, x)
        offsets, mask, classes = multibox_target(anchors, labels, self.iou_threshold)
        n = x.shape[0]
        logits = cls_preds.reshape(-1, cls_preds.shape[-1])
        cls = F.cross_entropy(logits, classes.reshape(-1), reduction="none")
        bbox = F.l1_loss(bbox_preds * mask, offsets * mask, reduction="none")
        per_image = cls.reshape(n, -1).mean(dim=1) + bbox.mean(dim=1)
        loss = per_image.mean()
        stats = {
            "loss": loss.detach() * n,
            "cls_wrong": (cls_preds.argmax(dim=-1) != classes).sum(),
            "anchors": torch.tensor(float(classes.numel()), device=x.device),
            "bbox_abs": ((offsets - bbox_preds) * mask).abs().sum().detach(),
            "bbox_entries": torch.tensor(float(offsets.numel()), device=x.device),
        }
        return loss, stats, n, (anchors, cls_preds, bbox_preds)

    def step(self, model: nn.Module, batch):
        loss, stats, n, _ = self.losses(model, batch)
        return loss, stats, n

    def detect(self, anchors: Tensor, cls_preds: Tensor, bbox_preds: Tensor) -> Tensor:
        probs = F.softmax(cls_preds, dim=2).permute(0, 2, 1)
        return multibox_detection(probs, bbox_preds, anchors, self.nms_threshold, self.pos_threshold)

    def validation_step(self, model: nn.Module, batch):
        loss, stats, n, outputs = self.losses(model, batch)
        detections = self.detect(*outputs)
        num_classes = outputs[1].shape[-1] - 1
        tp, fp, gt = ap_histograms(
            detections, batch[1], num_classes, self.map_iou, self.max_detections, self.ap_bins
        )
        for c in range(num_classes):
            stats[f"ap_gt_{c}"] = gt[c]
            for b in range(self.ap_bins):
                stats[f"ap_tp_{c}_{b}"] = tp[c, b]
                stats[f"ap_fp_{c}_{b}"] = fp[c, b]
        return loss, stats, n

    def compute(self, sums: dict[str, float], count: int) -> dict[str, float]:
        if count == 0:
            return {}
        metrics = {
            "loss": sums["loss"] / count,
            "class_err": sums["cls_wrong"] / sums["anchors"],
            "bbox_mae": sums["bbox_abs"] / sums["bbox_entries"],
        }
        num_classes = sum(1 for k in sums if k.startswith("ap_gt_"))
        if num_classes:
            aps = []
            for c in range(num_classes):
                if sums[f"ap_gt_{c}"] == 0:
                    continue  # a class absent from the validation set has no AP
                tp = torch.tensor([sums[f"ap_tp_{c}_{b}"] for b in range(self.ap_bins)], dtype=torch.float64)
                fp = torch.tensor([sums[f"ap_fp_{c}_{b}"] for b in range(self.ap_bins)], dtype=torch.float64)
                aps.append(average_precision(tp, fp, sums[f"ap_gt_{c}"]))
            metrics["map50"] = sum(aps) / len(aps) if aps else 0.0
        return metrics

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def draw(self, model: nn.Module, data, folder: Path, num: int) -> list[Path]:
        """The first `num` validation images with their detections above draw_threshold (red, with the
        confidence) and the ground truth (green): folder/<index>.png."""
        from PIL import Image
        from torchvision.utils import draw_bounding_boxes

        was_training = model.training
        model.eval()
        folder.mkdir(parents=True, exist_ok=True)
        written, index = [], 0
        for x, labels in data.val_loader():
            detections = self.detect(*self._outputs(model, x))
            for image, det, label in zip(x, detections.cpu(), labels.cpu(), strict=True):
                if index >= num:
                    break
                h, w = image.shape[-2:]
                scale = torch.tensor([w, h, w, h])
                keep = (det[:, 0] >= 0) & (det[:, 1] >= self.draw_threshold)
                picture = (image.float().clamp(0, 1) * 255).byte().cpu()
                truth = label[label[:, 0] >= 0]
                if len(truth):
                    picture = draw_bounding_boxes(picture, truth[:, 1:] * scale, colors="lime", width=1)
                if keep.any():
                    texts = [f"{int(c)}:{p:.2f}" for c, p in det[keep, :2].tolist()]
                    boxes = det[keep, 2:] * scale
                    picture = draw_bounding_boxes(picture, boxes, texts, colors="red", width=2)
                path = folder / f"{index:03d}.png"
                Image.fromarray(picture.permute(1, 2, 0).numpy()).save(path)
                written.append(path)
                index += 1
            if index >= num:
                break
        model.train(was_training)
        return written

    def on_fit_end(self, model: nn.Module, ctx: FitContext) -> None:
        if self.num_drawn:
            written = self.draw(model, ctx.data, Path(ctx.run_dir) / "detections", self.num_drawn)
            if written:
                log.info("detections: %s (%d images)", written[0].parent, len(written))

    def predict(self, model: nn.Module, data, run_dir: Path) -> None:
        written = self.draw(model, data, Path(run_dir) / "detections", max(self.num_drawn, 1))
        log.info("detections: %s (%d images)", Path(run_dir) / "detections", len(written))


def ap_histograms(
    detections: Tensor, labels: Tensor, num_classes: int, iou: float, max_detections: int, bins: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per class: true- and false-positive counts by confidence bin (classes, bins), and the number of
    ground-truth boxes (classes,). VOC matching per image: detections by falling confidence, each takes its
    best-overlapping box of its class; it is a true positive if that IoU >= iou and no earlier detection took
    the box."""
    device = detections.device
    tp = torch.zeros(num_classes * bins, device=device)
    fp = torch.zeros(num_classes * bins, device=device)
    valid = labels[..., 0] >= 0
    gt_count = torch.bincount(labels[..., 0][valid].long(), minlength=num_classes)[:num_classes].float()
    for det, label, ok in zip(detections, labels, valid, strict=True):
        det = det[det[:, 0] >= 0]
        det = det[det[:, 1].argsort(descending=True)][:max_detections]
        if len(det) == 0:
            continue
        truth = label[ok]
        classes = det[:, 0].long()
        hit = torch.zeros(len(det), dtype=torch.bool, device=device)
        if len(truth):
            overlap = box_iou(det[:, 2:], truth[:, 1:])
            overlap = overlap.masked_fill(classes[:, None] != truth[None, :, 0].long(), -1.0)
            best, which = overlap.max(dim=1)
            candidate = best >= iou
            # the first (most confident) candidate for each box wins it
            order = torch.arange(len(det), device=device)
            first = torch.full((len(truth),), len(det), device=device, dtype=torch.long)
            first = first.scatter_reduce(0, which[candidate], order[candidate], reduce="amin")
            hit = candidate & (first[which] == order)
        slot = classes * bins + (det[:, 1] * bins).long().clamp(0, bins - 1)
        tp += torch.bincount(slot[hit], minlength=num_classes * bins)[: num_classes * bins].float()
        fp += torch.bincount(slot[~hit], minlength=num_classes * bins)[: num_classes * bins].float()
    return tp.reshape(num_classes, bins), fp.reshape(num_classes, bins), gt_count


def average_precision(tp: Tensor, fp: Tensor, num_gt: float) -> float:
    """All-point interpolated AP from true/false-positive counts per confidence bin (low to high)."""
    tp_cum, fp_cum = tp.flip(0).cumsum(0), fp.flip(0).cumsum(0)  # thresholds from the top bin down
    found = (tp_cum + fp_cum) > 0
    if not found.any():
        return 0.0
    tp_cum, fp_cum = tp_cum[found], fp_cum[found]
    recall = torch.cat([torch.zeros(1, dtype=tp.dtype), tp_cum / num_gt])
    precision = tp_cum / (tp_cum + fp_cum)
    envelope = precision.flip(0).cummax(0).values.flip(0)  # the best precision at this recall or beyond
    return float(((recall[1:] - recall[:-1]) * envelope).sum())
