"""Semantic segmentation data: images (N, 3, H, W) uint8 and class maps (N, H, W) uint8, normalised per batch
on the device with ImageNet's mean and std (as the book, for the pretrained ResNet body).

- `VOCSegmentationData`: Pascal VOC2012 as the book reads it (13.9): the colour-mapped label PNGs turned into
  class indices through the VOC colormap, images smaller than the crop dropped, random crops (train: from
  (seed, epoch, example); validation: one fixed crop per example, from the seed).
- `CompositeSegmentationData`: the offline stand-in, Fashion-MNIST items on textured backgrounds with their
  masks (dlrun.data.composites).
"""

import logging
import tarfile
from pathlib import Path
from typing import Annotated, Literal

import torch
from torch import Tensor

from dlrun.data.composites import load_objects, make_splits
from dlrun.data.in_memory import InMemoryData
from dlrun.errors import DlrunError, first_line
from dlrun.ranges import BatchSize, Max, Min, OneOf, OptionalBatchSize

log = logging.getLogger("dlrun")

VOC_URL = "http://d2l-data.s3-accelerate.amazonaws.com/VOCtrainval_11-May-2012.tar"
VOC_SHA1 = "4e443f8a2eca6b1dac8a6c57641b67dd40621a49"
VOC_COLORMAP = [
    [0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128], [0, 128, 128],
    [128, 128, 128], [64, 0, 0], [192, 0, 0], [64, 128, 0], [192, 128, 0], [64, 0, 128], [192, 0, 128],
    [64, 128, 128], [192, 128, 128], [0, 64, 0], [128, 64, 0], [0, 192, 0], [128, 192, 0], [0, 64, 128],
]  # fmt: skip
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train",
    "tv/monitor",
]  # fmt: skip
VOC_VOID = (224, 224, 192)  # object borders: not in the book's colormap, so its lookup makes them background
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class SegmentationData(InMemoryData):
    palette: list = VOC_COLORMAP

    def transform(self, x: Tensor) -> Tensor:
        x = x.float().div_(255.0)
        mean = torch.tensor(MEAN, device=x.device).reshape(1, 3, 1, 1)
        std = torch.tensor(STD, device=x.device).reshape(1, 3, 1, 1)
        return (x - mean) / std

    @staticmethod
    def unnormalize(x: Tensor) -> Tensor:
        mean = torch.tensor(MEAN, device=x.device).reshape(1, 3, 1, 1)
        std = torch.tensor(STD, device=x.device).reshape(1, 3, 1, 1)
        return x * std + mean


def colormap_to_label(label: Tensor, where: str) -> Tensor:
    """(3, H, W) uint8 colours -> (H, W) uint8 class indices through VOC_COLORMAP; the void border colour
    becomes background (as the book's lookup table does); any other colour is an error naming it."""
    code = (label[0].long() * 256 + label[1].long()) * 256 + label[2].long()
    table = torch.full((256**3,), -1, dtype=torch.long)
    for i, (r, g, b) in enumerate(VOC_COLORMAP):
        table[(r * 256 + g) * 256 + b] = i
    table[(VOC_VOID[0] * 256 + VOC_VOID[1]) * 256 + VOC_VOID[2]] = 0
    classes = table[code]
    if (classes < 0).any():
        y, x = (classes < 0).nonzero()[0].tolist()
        colour = tuple(label[:, y, x].tolist())
        raise DlrunError(f"{where}: pixel ({x}, {y}) has colour {colour}, which is not in the VOC colormap")
    return classes.to(torch.uint8)


def read_rgb(path: Path) -> Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()


def fetch_voc(root: Path, download: bool) -> Path:
    from dlrun.data.download import download as fetch

    target = root / "VOCdevkit" / "VOC2012"
    if target.is_dir():
        return target
    if not download:
        raise DlrunError(f"{target} not found; set data.download=true or extract {VOC_URL} into {root}")
    archive = root / Path(VOC_URL).name
    try:
        if not archive.is_file():
            log.info("%s not found: downloading %s (2 GB)", target, VOC_URL)
            fetch(VOC_URL, archive, VOC_SHA1, timeout=120)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    except (OSError, ValueError, tarfile.TarError) as err:
        raise DlrunError(
            f"{target} not found and downloading {VOC_URL} failed ({first_line(err)}); extract the tar into "
            f"{root} or point DLRUN_DATA_DIR (paths.data_dir) at a folder that holds VOCdevkit/VOC2012"
        ) from None
    return target


def read_voc(voc_dir: Path, train: bool, crop: tuple[int, int]) -> tuple[list[Tensor], list[Tensor]]:
    """The split's images and class maps, those smaller than the crop dropped (the book's filter)."""
    split = voc_dir / "ImageSets" / "Segmentation" / ("train.txt" if train else "val.txt")
    if not split.is_file():
        raise DlrunError(f"{split} not found: {voc_dir} is not a VOC2012 folder")
    images, labels = [], []
    for line, name in enumerate(split.read_text().split(), start=1):
        image_path = voc_dir / "JPEGImages" / f"{name}.jpg"
        label_path = voc_dir / "SegmentationClass" / f"{name}.png"
        for path in (image_path, label_path):
            if not path.is_file():
                raise DlrunError(f"{split}:{line}: {path.relative_to(voc_dir)} not found")
        image, label = read_rgb(image_path), read_rgb(label_path)
        if image.shape != label.shape:
            raise DlrunError(f"{label_path}: {tuple(label.shape)} but its image is {tuple(image.shape)}")
        if image.shape[1] >= crop[0] and image.shape[2] >= crop[1]:
            images.append(image)
            labels.append(colormap_to_label(label, str(label_path)))
    log.info("read %d examples", len(images))
    if not images:
        raise DlrunError(f"{split}: no image is at least {crop[0]}x{crop[1]} (data.crop)")
    return images, labels


class CroppedBatches:
    """Batches of random crops of different-sized images; each example's crop comes from (seed, epoch, index),
    so a resumed epoch crops as the uninterrupted one would."""

    def __init__(self, images, labels, sampler, device, transform, crop, seed: int, epoch: int | None):
        self.images, self.labels, self.sampler, self.device = images, labels, sampler, device
        self.transform, self.crop, self.seed, self.epoch = transform, crop, seed, epoch

    def __len__(self) -> int:
        return len(self.sampler)

    def _crop(self, i: int) -> tuple[Tensor, Tensor]:
        image, label = self.images[i], self.labels[i]
        h, w = self.crop
        epoch = -1 if self.epoch is None else self.epoch  # validation: the same crop every time
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + (epoch + 1) * 10_007 + i) % 2**63)
        top = int(torch.randint(image.shape[1] - h + 1, (), generator=gen))
        left = int(torch.randint(image.shape[2] - w + 1, (), generator=gen))
        return image[:, top : top + h, left : left + w], label[top : top + h, left : left + w]

    def __iter__(self):
        for idx in self.sampler:
            pairs = [self._crop(int(i)) for i in idx]
            x = torch.stack([p[0] for p in pairs]).to(self.device)
            y = torch.stack([p[1] for p in pairs]).to(self.device)
            yield self.transform(x), y


class VOCSegmentationData(SegmentationData):
    def __init__(
        self,
        root: str | Path,
        batch_size: BatchSize = 32,
        crop: tuple[int, int] | list[int] = (320, 480),
        num_classes: Annotated[int, OneOf(21)] = 21,
        channels: Annotated[int, OneOf(3)] = 3,
        download: bool = True,
        val_batch_size: OptionalBatchSize = None,
    ):
        super().__init__(batch_size, val_batch_size)
        self.num_classes, self.channels, self.crop = num_classes, channels, tuple(crop)
        voc_dir = fetch_voc(Path(root), download)
        self.train_images, self.train_labels = read_voc(voc_dir, True, self.crop)
        self.val_images, self.val_labels = read_voc(voc_dir, False, self.crop)

    def setup(self, device: torch.device, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.device, self.seed, self.rank, self.world_size = device, seed, rank, world_size

    def train_loader(self, epoch: int = 0, skip: int = 0) -> CroppedBatches:
        sampler = self.train_sampler(len(self.train_images), epoch, skip)
        return CroppedBatches(
            self.train_images,
            self.train_labels,
            sampler,
            self.device,
            self.transform,
            self.crop,
            self.seed,
            epoch,
        )

    def val_loader(self) -> CroppedBatches:
        sampler = self.val_sampler(len(self.val_images))
        return CroppedBatches(
            self.val_images, self.val_labels, sampler, self.device, self.transform, self.crop, self.seed, None
        )


class CompositeSegmentationData(SegmentationData):
    """Fashion-MNIST items (or `source=random` blobs) on textured backgrounds, with per-pixel classes:
    0 background, then 1 (one class) or 1..10 (multiclass, the item classes); made from `seed`."""

    def __init__(
        self,
        root: str | Path,
        batch_size: BatchSize = 32,
        num_train: Annotated[int, Min(1)] = 1000,
        num_val: Annotated[int, Min(1)] = 200,
        height: Annotated[int, Min(16)] = 128,
        width: Annotated[int, Min(16)] = 192,
        max_objects: Annotated[int, Min(1)] = 3,
        min_scale: Annotated[float, Min(0.02), Max(1)] = 0.25,
        max_scale: Annotated[float, Min(0.02), Max(1)] = 0.6,
        multiclass: bool = True,
        num_classes: Annotated[int, Min(2)] = 11,
        channels: Annotated[int, OneOf(3)] = 3,
        source: Literal["fashion_mnist", "random"] = "fashion_mnist",
        seed: int = 0,
        download: bool = True,
        val_batch_size: OptionalBatchSize = None,
        on_device: bool = False,
    ):
        super().__init__(batch_size, val_batch_size, on_device)
        train_objects, val_objects, object_classes = load_objects(source, root, download)
        found = object_classes + 1 if multiclass else 2
        if found != num_classes:
            raise DlrunError(
                f"data.num_classes={num_classes} but background and the objects make {found} classes "
                f"(data.multiclass={multiclass}); set data.num_classes={found}"
            )
        self.num_classes, self.channels = num_classes, channels
        options = dict(
            max_objects=max_objects, min_scale=min_scale, max_scale=max_scale, multiclass=multiclass
        )
        (self.x_train, _, self.y_train), (self.x_val, _, self.y_val) = make_splits(
            train_objects, val_objects, num_train, num_val, height, width, seed, **options
        )
