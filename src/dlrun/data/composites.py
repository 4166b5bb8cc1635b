"""Offline scenes for detection and segmentation: small grey objects (Fashion-MNIST items, or random blobs for
tests) pasted at random scales, positions and tints onto textured backgrounds, with their exact boxes and
per-pixel masks. Everything comes from one seed."""

from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from dlrun.errors import DlrunError


def object_source(source: str, root: str | Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    """(objects (n, 28, 28) uint8, their classes (n,)): Fashion-MNIST's train or test split, or
    `random`: 512 smooth random blobs in 4 classes (no files; what the tests use)."""
    if source == "fashion_mnist":
        from dlrun.data.vision import open_torchvision

        ds = open_torchvision("FashionMNIST", root, train=train, download=download)
        return torch.as_tensor(ds.data), torch.as_tensor(ds.targets, dtype=torch.long)
    if source == "random":
        gen = torch.Generator().manual_seed(1 if train else 2)
        coarse = torch.rand(512, 1, 5, 5, generator=gen)
        blobs = F.interpolate(coarse, size=(28, 28), mode="bicubic", align_corners=False)[:, 0]
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, 28), torch.linspace(-1, 1, 28), indexing="ij")
        disc = (1 - (xx**2 + yy**2)).clamp(min=0)  # keeps blobs away from the borders
        blobs = (blobs * disc * 2.5).clamp(0, 1)
        blobs = torch.where(blobs > 0.2, blobs, torch.zeros(()))
        return (blobs * 255).round().to(torch.uint8), torch.randint(4, (512,), generator=gen)
    raise DlrunError(f"data.source={source!r} must be fashion_mnist or random")


def background(height: int, width: int, gen: torch.Generator) -> Tensor:
    """A (3, H, W) texture in [0, 1]: smooth random colour fields plus fine noise."""
    coarse = torch.rand(1, 3, 4, 6, generator=gen)
    middle = torch.rand(1, 3, 16, 24, generator=gen)
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    detail = F.interpolate(middle, size=(height, width), mode="bilinear", align_corners=False)
    noise = torch.rand(1, 3, height, width, generator=gen)
    return (0.6 * smooth + 0.25 * detail + 0.15 * noise)[0].clamp(0, 1)


def make_scenes(
    objects: Tensor,
    classes: Tensor,
    num: int,
    height: int,
    width: int,
    gen: torch.Generator,
    max_objects: int = 1,
    min_scale: float = 0.15,
    max_scale: float = 0.5,
    multiclass: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """num scenes: (images (num, 3, H, W) uint8, labels (num, max_objects, 5) as (class, x1, y1, x2, y2) in
    image fractions, padding rows class -1, masks (num, H, W) uint8: 0 background, class + 1 per object).

    Each scene holds 1..max_objects objects; an object's side is min_scale..max_scale of the image's shorter
    side; its box is exactly its visible pixels' extent (later objects may cover earlier ones). Classes are
    the objects' own (multiclass) or 0 for all."""
    images = torch.empty(num, 3, height, width, dtype=torch.uint8)
    labels = torch.full((num, max_objects, 5), -1.0)
    masks = torch.zeros(num, height, width, dtype=torch.uint8)
    short = min(height, width)
    for i in range(num):
        canvas = background(height, width, gen)
        instance = torch.zeros(height, width, dtype=torch.long)  # which object each pixel shows (1-based)
        count = int(torch.randint(1, max_objects + 1, (), generator=gen))
        placed = []
        for n in range(1, count + 1):
            k = int(torch.randint(len(objects), (), generator=gen))
            side = max(4, int(short * (min_scale + (max_scale - min_scale) * torch.rand((), generator=gen))))
            obj = objects[k].float().div(255)[None, None]
            alpha = F.interpolate(obj, size=(side, side), mode="bilinear", align_corners=False)[0, 0]
            alpha = (alpha * 1.5).clamp(0, 1)
            y0 = int(torch.randint(height - side + 1, (), generator=gen))
            x0 = int(torch.randint(width - side + 1, (), generator=gen))
            region = canvas[:, y0 : y0 + side, x0 : x0 + side]
            tint = 0.2 + 0.8 * torch.rand(3, 1, 1, generator=gen)
            if (tint.mean() - region.mean()).abs() < 0.25:  # keep objects visible on their background
                tint = 1 - tint
            canvas[:, y0 : y0 + side, x0 : x0 + side] = region * (1 - alpha) + tint * alpha
            instance[y0 : y0 + side, x0 : x0 + side][alpha > 0.5] = n
            placed.append(int(classes[k]) if multiclass else 0)
        images[i] = (canvas * 255).round().to(torch.uint8)
        row = 0
        for n, label in enumerate(placed, start=1):
            ys, xs = (instance == n).nonzero(as_tuple=True)
            if len(ys) == 0:  # wholly covered by later objects
                continue
            masks[i][instance == n] = label + 1
            labels[i, row] = torch.tensor(
                [label, xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height]
            )
            row += 1
    return images, labels, masks


def load_objects(source: str, root: str | Path, download: bool) -> tuple[tuple, tuple, int]:
    """The training and held-out objects to paste, and how many object classes they hold."""
    train = object_source(source, root, train=True, download=download)
    val = object_source(source, root, train=False, download=download)
    return train, val, int(max(train[1].max(), val[1].max())) + 1


def make_splits(
    train_objects: tuple,
    val_objects: tuple,
    num_train: int,
    num_val: int,
    height: int,
    width: int,
    seed: int,
    **options,
) -> tuple[tuple, tuple]:
    """make_scenes for the training and the held-out split, both from `seed`."""
    if options["min_scale"] > options["max_scale"]:
        raise DlrunError(
            f"data.min_scale={options['min_scale']} must not exceed data.max_scale={options['max_scale']}"
        )
    gen = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of small ops: one thread is fastest
    try:
        train = make_scenes(*train_objects, num_train, height, width, gen, **options)
        val = make_scenes(*val_objects, num_val, height, width, gen, **options)
    finally:
        torch.set_num_threads(threads)
    return train, val
