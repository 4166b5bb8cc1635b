"""The book's TinySSD (13.7): a base network and four more blocks, each scale predicting classes and
box offsets for its anchors. forward(x) -> (anchors (1, A, 4), class logits (N, A, classes + 1),
offsets (N, A*4)).
"""

import torch
from torch import Tensor, nn

from dlrun.tasks.anchors import multibox_prior

SIZES = [[0.2, 0.272], [0.37, 0.447], [0.54, 0.619], [0.71, 0.79], [0.88, 0.961]]
RATIOS = [[1, 2, 0.5]] * 5


def down_sample_blk(in_channels: int, out_channels: int) -> nn.Sequential:
    """2 x (3x3 conv, BN, ReLU), then 2x2 max pool: half the height and width."""
    layers = []
    for _ in range(2):
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        layers += [conv, nn.BatchNorm2d(out_channels), nn.ReLU()]
        in_channels = out_channels
    return nn.Sequential(*layers, nn.MaxPool2d(2))


def base_net(in_channels: int) -> nn.Sequential:
    filters = [in_channels, 16, 32, 64]
    return nn.Sequential(*(down_sample_blk(filters[i], filters[i + 1]) for i in range(3)))


def flatten_pred(pred: Tensor) -> Tensor:
    return torch.flatten(pred.permute(0, 2, 3, 1), start_dim=1)


class TinySSD(nn.Module):
    def __init__(
        self,
        num_classes: int = 1,
        in_channels: int = 3,
        sizes: list | None = None,
        ratios: list | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.sizes, self.ratios = sizes or SIZES, ratios or RATIOS
        num_anchors = len(self.sizes[0]) + len(self.ratios[0]) - 1
        channels = [64, 128, 128, 128, 128]
        self.blocks = nn.ModuleList(
            [base_net(in_channels), down_sample_blk(64, 128), down_sample_blk(128, 128),
             down_sample_blk(128, 128), nn.AdaptiveMaxPool2d((1, 1))]
        )  # fmt: skip
        self.cls = nn.ModuleList(
            nn.Conv2d(c, num_anchors * (num_classes + 1), kernel_size=3, padding=1) for c in channels
        )
        self.bbox = nn.ModuleList(nn.Conv2d(c, num_anchors * 4, kernel_size=3, padding=1) for c in channels)
        self._anchors: dict = {}

    def anchors(self, shapes: list[tuple[int, int]], device) -> Tensor:
        """All scales' anchors for these feature-map shapes (cached: they depend on shapes alone)."""
        key = (tuple(shapes), str(device))
        if key not in self._anchors:
            self._anchors[key] = torch.cat(
                [
                    multibox_prior(h, w, s, r, device)
                    for (h, w), s, r in zip(shapes, self.sizes, self.ratios, strict=True)
                ],
                dim=1,
            )
        return self._anchors[key]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        shapes, cls_preds, bbox_preds = [], [], []
        for block, cls, bbox in zip(self.blocks, self.cls, self.bbox, strict=True):
            x = block(x)
            shapes.append(tuple(x.shape[-2:]))
            cls_preds.append(flatten_pred(cls(x)))
            bbox_preds.append(flatten_pred(bbox(x)))
        cls_preds = torch.cat(cls_preds, dim=1)
        cls_preds = cls_preds.reshape(cls_preds.shape[0], -1, self.num_classes + 1)
        return self.anchors(shapes, x.device), cls_preds, torch.cat(bbox_preds, dim=1)
