"""The two pictures of neural style transfer (13.12), resized to (height, width) and normalised with
ImageNet's mean and std as the book's preprocess. Without files, an offline pair made from `seed`: a scene of
pasted objects (content) and coloured stripes (style). Each epoch is one batch: (content, style)."""

from pathlib import Path
from typing import Annotated

import torch
from torch import Tensor
from torch.nn import functional as F

from dlrun.data.base import DataModule
from dlrun.data.segmentation import MEAN, STD
from dlrun.errors import DlrunError
from dlrun.ranges import Min


def load_image(path: str | Path, height: int, width: int) -> Tensor:
    """(1, 3, height, width) in [0, 1]."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            pixels = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    except (OSError, UnidentifiedImageError) as err:
        raise DlrunError(f"cannot read image {path}: {type(err).__name__}") from None
    x = pixels[None].float().div(255)
    return F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)


def offline_pair(height: int, width: int, seed: int) -> tuple[Tensor, Tensor]:
    from dlrun.data.composites import make_scenes, object_source

    gen = torch.Generator().manual_seed(seed)
    content, _, _ = make_scenes(
        *object_source("random", "", True, False), 1, height, width, gen, max_objects=3
    )
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    phase = torch.rand(3, 1, 1, generator=gen) * 6.28
    style = 0.5 + 0.5 * torch.sin((xx + yy)[None] * 0.3 + phase)  # diagonal stripes in three colours
    return content.float().div(255), style[None].clamp(0, 1)


class StyleImages(DataModule):
    def __init__(
        self,
        content_image: str | None = None,
        style_image: str | None = None,
        height: Annotated[int, Min(8)] = 300,
        width: Annotated[int, Min(8)] = 450,
        seed: int = 0,
    ):
        super().__init__(batch_size=1)
        if (content_image is None) != (style_image is None):
            raise DlrunError(
                "give both data.content_image and data.style_image, or neither (an offline pair)"
            )
        if content_image is None:
            content, style = offline_pair(height, width, seed)
        else:
            content, style = load_image(content_image, height, width), load_image(style_image, height, width)
        self.content, self.style = self.normalize(content), self.normalize(style)

    @staticmethod
    def normalize(x: Tensor) -> Tensor:
        return (x - torch.tensor(MEAN).reshape(1, 3, 1, 1)) / torch.tensor(STD).reshape(1, 3, 1, 1)

    @staticmethod
    def postprocess(x: Tensor) -> Tensor:
        return (x * torch.tensor(STD).reshape(1, 3, 1, 1) + torch.tensor(MEAN).reshape(1, 3, 1, 1)).clamp(
            0, 1
        )

    def train_loader(self, epoch: int = 0, skip: int = 0) -> list:
        return [] if skip else [(self.content.to(self.device), self.style.to(self.device))]

    def val_loader(self) -> list:
        return []
