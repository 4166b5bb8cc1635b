"""Small building blocks shared by several models."""

import torch
from torch import nn

from dlrun.errors import DlrunError, first_line

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}
POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise DlrunError(f"activation {name!r} is unknown; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def pool(name: str, kernel_size: int, stride: int) -> nn.Module:
    if name not in POOLS:
        raise DlrunError(f"pooling {name!r} is unknown; choose one of {', '.join(POOLS)}")
    return POOLS[name](kernel_size=kernel_size, stride=stride)


@torch.no_grad()
def output_features(body: nn.Module, in_channels: int, image_size: int) -> int:
    """Features after `body` for one image of the given size (a dry run on zeros, in eval mode)."""
    was_training = body.training
    body.eval()
    try:
        out = body(torch.zeros(1, in_channels, image_size, image_size))
    except RuntimeError as err:
        raise DlrunError(
            f"a {image_size}x{image_size} input is too small for this model ({first_line(err)}); "
            "set data.resize to a larger size"
        ) from None
    finally:
        body.train(was_training)
    return out.flatten(1).shape[1]


def dense_head(
    in_features: int, num_classes: int, dropout: float = 0.5, width: int = 4096
) -> list[nn.Module]:
    """AlexNet's and VGG's classifier: two `width`-wide ReLU layers with dropout, then the class layer."""
    return [
        nn.Linear(in_features, width),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(width, num_classes),
    ]
