import torch
from torch import nn

from dlrun.models.init import init_weights
from dlrun.models.layers import output_features


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(), nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
    )


def transition_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
        nn.AvgPool2d(kernel_size=2, stride=2),
    )


class DenseBlock(nn.Module):
    """Conv blocks that each add `growth_rate` channels, concatenated onto their input."""

    def __init__(self, num_convs: int, in_channels: int, growth_rate: int):
        super().__init__()
        self.net = nn.Sequential(
            *(conv_block(in_channels + i * growth_rate, growth_rate) for i in range(num_convs))
        )
        self.out_channels = in_channels + num_convs * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.net:
            x = torch.cat((x, block(x)), dim=1)
        return x


class DenseNet(nn.Sequential):
    """DenseNet as in the book (8.7): ResNet's stem, dense blocks separated by transition blocks that halve
    channels and resolution, then BN, ReLU, global average pool, one linear layer."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 96,
        num_channels: int = 64,
        growth_rate: int = 32,
        num_convs_in_dense_blocks=(4, 4, 4, 4),
        init: str = "xavier",
    ):
        layers = [
            nn.Conv2d(in_channels, num_channels, kernel_size=7, stride=2, padding=3),
            nn.BatchNorm2d(num_channels),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        ]
        for i, num_convs in enumerate(num_convs_in_dense_blocks):
            layers.append(DenseBlock(num_convs, num_channels, growth_rate))
            num_channels = layers[-1].out_channels
            if i < len(num_convs_in_dense_blocks) - 1:
                layers.append(transition_block(num_channels, num_channels // 2))
                num_channels //= 2
        super().__init__(
            *layers,
            nn.BatchNorm2d(num_channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(num_channels, num_classes),
        )
        output_features(self, in_channels, image_size)  # a clear error if the images are too small
        init_weights(self, init)
