"""The book's fully convolutional network (13.11): a ResNet-18 without its global pool and fc layer (stride
32), a 1x1 conv to the classes, and a transposed convolution (kernel 64, stride 32, padding 16) that scales
the class maps back to the input size, initialised to bilinear upsampling."""

import logging
from typing import Annotated

import torch
import torchvision
from torch import Tensor, nn

from dlrun.errors import DlrunError, first_line
from dlrun.ranges import OneOf

log = logging.getLogger("dlrun")


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int) -> Tensor:
    """The book's bilinear-interpolation weights for nn.ConvTranspose2d: channel i to channel i only."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = (torch.arange(kernel_size).reshape(-1, 1), torch.arange(kernel_size).reshape(1, -1))
    filt = (1 - torch.abs(og[0] - center) / factor) * (1 - torch.abs(og[1] - center) / factor)
    weight = torch.zeros((in_channels, out_channels, kernel_size, kernel_size))
    weight[range(in_channels), range(out_channels), :, :] = filt
    return weight


def resnet18_body(weights: str | None) -> list[nn.Module]:
    """torchvision's ResNet-18 children but the last two; `weights` a torchvision weights name (DEFAULT,
    IMAGENET1K_V1) loaded from torch's cache or downloaded, or None (random, as torchvision initialises)."""
    try:
        net = torchvision.models.resnet18(weights=weights)
    except Exception as err:  # offline: URLError; a wrong name: ValueError/KeyError
        raise DlrunError(
            f"model.weights={weights}: torchvision's ResNet-18 weights are not in "
            f"{torch.hub.get_dir()}/checkpoints and could not be downloaded ({first_line(err)}); copy "
            "resnet18-f37072fd.pth there or set model.weights=null (a randomly initialised body)"
        ) from None
    if weights is None:
        log.info("FCN: ResNet-18 body randomly initialised (model.weights=null)")
    return list(net.children())[:-2]


class FCN(nn.Sequential):
    def __init__(
        self,
        num_classes: int = 21,
        weights: str | None = "DEFAULT",
        in_channels: Annotated[int, OneOf(3)] = 3,
    ):
        super().__init__(*resnet18_body(weights))
        self.add_module("final_conv", nn.Conv2d(512, num_classes, kernel_size=1))
        self.add_module(
            "transpose_conv",
            nn.ConvTranspose2d(num_classes, num_classes, kernel_size=64, padding=16, stride=32),
        )
        with torch.no_grad():
            self.transpose_conv.weight.copy_(bilinear_kernel(num_classes, num_classes, 64))
