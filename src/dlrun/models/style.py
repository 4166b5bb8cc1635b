"""Neural style transfer's model (13.12): the synthesized image is the only parameter; a frozen VGG-19
feature network (its first 29 layers, up to the last style layer) measures it."""

import logging

import torch
import torchvision
from torch import Tensor, nn

from dlrun.errors import DlrunError, first_line

log = logging.getLogger("dlrun")

STYLE_LAYERS, CONTENT_LAYERS = (0, 5, 10, 19, 28), (25,)


class StyleTransferImage(nn.Module):
    def __init__(self, height: int = 300, width: int = 450, weights: str | None = "DEFAULT"):
        super().__init__()
        try:
            vgg = torchvision.models.vgg19(weights=weights)
        except Exception as err:  # offline: URLError; a wrong name: ValueError/KeyError
            raise DlrunError(
                f"model.weights={weights}: torchvision's VGG-19 weights are not in "
                f"{torch.hub.get_dir()}/checkpoints and could not be downloaded ({first_line(err)}); copy "
                "vgg19-dcbb9e9d.pth there, or set model.weights=null to run on random VGG features"
            ) from None
        if weights is None:
            log.warning("style transfer on a randomly initialised VGG-19 (model.weights=null): the mechanics "
                        "run, but the picture is not the book's")  # fmt: skip
        last = max(STYLE_LAYERS + CONTENT_LAYERS)
        self.features = nn.Sequential(*vgg.features[: last + 1]).requires_grad_(False).eval()
        self.image = nn.Parameter(torch.zeros(1, 3, height, width))

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # frozen: never in training mode
        return self

    def extract(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """(content layers' outputs, style layers' outputs) for x, as the book's extract_features."""
        contents, styles = [], []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in STYLE_LAYERS:
                styles.append(x)
            if i in CONTENT_LAYERS:
                contents.append(x)
        return contents, styles

    def forward(self) -> tuple[list[Tensor], list[Tensor]]:
        return self.extract(self.image)
