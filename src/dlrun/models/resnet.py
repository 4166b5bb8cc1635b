from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from dlrun.errors import DlrunError
from dlrun.models.init import init_weights

WIDTHS = (64, 128, 256, 512)


class Residual(nn.Module):
    """Two 3x3 conv + BN layers and a skip connection, through a 1x1 conv (with the stride) when the shape
    changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        changes_shape = stride != 1 or in_channels != out_channels
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride)
            if changes_shape
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet(nn.Sequential):
    """ResNet as in the book (8.6): stem, four stages of residual blocks at 64/128/256/512 channels (each
    stage after the first halves the resolution), global average pool, one linear layer. `stages` is the
    number of blocks per stage: (2, 2, 2, 2) is ResNet-18, (3, 4, 6, 3) ResNet-34. `stem="cifar"` is the
    book's small-image variant (13.1, `d2l.resnet18(10, 3)`): a 3x3 stride-1 convolution, BN, ReLU, no
    max-pool."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 96,
        stages=(2, 2, 2, 2),
        init: str = "xavier",
        stem: Literal["imagenet", "cifar"] = "imagenet",
    ):
        if len(stages) != len(WIDTHS) or min(stages) < 1:
            raise DlrunError(f"model.stages={list(stages)}: give four block counts >= 1, e.g. [2, 2, 2, 2]")
        if stem == "cifar":
            first = nn.Sequential(
                nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(64), nn.ReLU()
            )
        else:
            first = nn.Sequential(
                nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        blocks = [first]
        channels = 64
        for i, (num_blocks, width) in enumerate(zip(stages, WIDTHS, strict=True)):
            stride = 1 if i == 0 else 2
            blocks.append(
                nn.Sequential(
                    Residual(channels, width, stride),
                    *(Residual(width, width) for _ in range(num_blocks - 1)),
                )
            )
            channels = width
        super().__init__(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
        init_weights(self, init)
