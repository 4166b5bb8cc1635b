from torch import nn

from dlrun.errors import DlrunError
from dlrun.models.init import init_weights
from dlrun.models.layers import dense_head, output_features

VGG11 = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))


def vgg_block(num_convs: int, in_channels: int, out_channels: int) -> nn.Sequential:
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
        in_channels = out_channels
    return nn.Sequential(*layers, nn.MaxPool2d(kernel_size=2, stride=2))


class VGG(nn.Sequential):
    """VGG as in the book (8.2): `arch` lists (number of convs, channels) per block, each block ending in a
    2x2 max-pool; then two 4096-wide dropout layers. `width_divisor` divides every conv's channels (the book
    trains VGG-11 with 4)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 224,
        arch=VGG11,
        width_divisor: int = 1,
        dropout: float = 0.5,
        init: str = "xavier",
    ):
        if width_divisor < 1 or any(channels < width_divisor for _, channels in arch):
            raise DlrunError(
                f"model.width_divisor={width_divisor} must be at least 1 and at most the "
                "smallest channel count in model.arch"
            )
        blocks, channels = [], in_channels
        for num_convs, out_channels in arch:
            blocks.append(vgg_block(num_convs, channels, out_channels // width_divisor))
            channels = out_channels // width_divisor
        features = nn.Sequential(*blocks, nn.Flatten())
        flat = output_features(features, in_channels, image_size)  # channels * 7 * 7 at 224 px
        super().__init__(
            *features,
            *dense_head(flat, num_classes, dropout),
        )
        init_weights(self, init)
