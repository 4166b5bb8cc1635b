import torch
from torch import nn

from dlrun.models.init import init_weights

# Inception blocks of the three stages after the stem: (c1, (c2 reduce, c2), (c3 reduce, c3), c4).
STAGES = (
    ((64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64)),
    (
        (192, (96, 208), (16, 48), 64),
        (160, (112, 224), (24, 64), 64),
        (128, (128, 256), (24, 64), 64),
        (112, (144, 288), (32, 64), 64),
        (256, (160, 320), (32, 128), 128),
    ),
    ((256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128)),
)


class Inception(nn.Module):
    """Four parallel paths concatenated on channels: 1x1; 1x1 then 3x3; 1x1 then 5x5; max-pool then 1x1."""

    def __init__(self, in_channels: int, c1: int, c2: tuple, c3: tuple, c4: int):
        super().__init__()
        self.p1 = nn.Sequential(nn.Conv2d(in_channels, c1, kernel_size=1), nn.ReLU())
        self.p2 = nn.Sequential(
            nn.Conv2d(in_channels, c2[0], kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.p3 = nn.Sequential(
            nn.Conv2d(in_channels, c3[0], kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2),
            nn.ReLU(),
        )
        self.p4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            nn.Conv2d(in_channels, c4, kernel_size=1),
            nn.ReLU(),
        )
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.p1(x), self.p2(x), self.p3(x), self.p4(x)), dim=1)


class GoogLeNet(nn.Sequential):
    """GoogLeNet as in the book (8.4): a two-part stem, nine Inception blocks in three stages, global
    average pool, one linear layer. Works at any input size (the book uses 96 px)."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int = 96, init: str = "xavier"
    ):
        blocks = [
            nn.Sequential(
                nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            ),
            nn.Sequential(
                nn.Conv2d(64, 64, kernel_size=1),
                nn.ReLU(),
                nn.Conv2d(64, 192, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            ),
        ]
        channels = 192
        for i, stage in enumerate(STAGES):
            layers = []
            for spec in stage:
                layers.append(Inception(channels, *spec))
                channels = layers[-1].out_channels
            if i < len(STAGES) - 1:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
            blocks.append(nn.Sequential(*layers))
        super().__init__(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
        init_weights(self, init)
