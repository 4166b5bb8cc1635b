from torch import nn

from dlrun.errors import DlrunError
from dlrun.models.batchnorm import BatchNorm
from dlrun.models.init import init_weights
from dlrun.models.layers import activation as make_activation
from dlrun.models.layers import output_features, pool


class LeNet(nn.Sequential):
    """LeNet-5 as in the book (7.6): two conv/act/pool stages, then 120-84-classes."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        activation: str = "sigmoid",
        pooling: str = "avg",
        init: str = "xavier",
    ):
        features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            make_activation(activation),
            pool(pooling, 2, 2),
            nn.Conv2d(6, 16, kernel_size=5),
            make_activation(activation),
            pool(pooling, 2, 2),
            nn.Flatten(),
        )
        flat = output_features(features, in_channels, image_size)
        super().__init__(
            *features,
            nn.Linear(flat, 120),
            make_activation(activation),
            nn.Linear(120, 84),
            make_activation(activation),
            nn.Linear(84, num_classes),
        )
        init_weights(self, init)


def _norm(kind: str, num_features: int, num_dims: int) -> nn.Module:
    if kind == "scratch":
        return BatchNorm(num_features, num_dims)
    if kind == "torch":
        return nn.BatchNorm2d(num_features) if num_dims == 4 else nn.BatchNorm1d(num_features)
    raise DlrunError(f"model.batchnorm={kind!r}; use scratch (the book's) or torch (nn.BatchNorm)")


class LeNetBN(nn.Sequential):
    """LeNet with batch normalization after every conv and linear layer but the last (book 8.5)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        activation: str = "sigmoid",
        pooling: str = "avg",
        batchnorm: str = "scratch",
        init: str = "xavier",
    ):
        features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),
            _norm(batchnorm, 6, 4),
            make_activation(activation),
            pool(pooling, 2, 2),
            nn.Conv2d(6, 16, kernel_size=5),
            _norm(batchnorm, 16, 4),
            make_activation(activation),
            pool(pooling, 2, 2),
            nn.Flatten(),
        )
        flat = output_features(features, in_channels, image_size)
        super().__init__(
            *features,
            nn.Linear(flat, 120),
            _norm(batchnorm, 120, 2),
            make_activation(activation),
            nn.Linear(120, 84),
            _norm(batchnorm, 84, 2),
            make_activation(activation),
            nn.Linear(84, num_classes),
        )
        init_weights(self, init)
