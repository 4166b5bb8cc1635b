from torch import nn

from dlrun.models.init import init_weights
from dlrun.models.layers import dense_head, output_features


class AlexNet(nn.Sequential):
    """AlexNet as in the book (8.1): five conv layers, three max-pools, two 4096-wide dropout layers."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 224,
        dropout: float = 0.5,
        init: str = "xavier",
    ):
        features = nn.Sequential(
            nn.Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Flatten(),
        )
        flat = output_features(features, in_channels, image_size)  # 6400 at 224 px
        super().__init__(
            *features,
            *dense_head(flat, num_classes, dropout),
        )
        init_weights(self, init)
