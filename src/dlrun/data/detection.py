"""Object detection data: images (N, 3, H, W) uint8 with labels (N, max_objects, 5) of (class, x1, y1, x2, y2)
in image fractions, padding rows class -1 (as the book's (bs, 1, 5) banana labels, padded for more objects).

- `BananaData`: the book's banana-detection set (13.6): bananas_train (1000) and bananas_val (100), 256x256,
  `label.csv` with `img_name,label,xmin,ymin,xmax,ymax` in pixels (several rows per image are allowed).
- `CompositeDetectionData`: the offline stand-in of the same format and size, from dlrun.data.composites.
"""

import csv
import logging
import zipfile
from pathlib import Path
from typing import Annotated, Literal

import torch
from torch import Tensor

from dlrun.data.composites import load_objects, make_splits
from dlrun.data.in_memory import InMemoryData
from dlrun.errors import DlrunError, first_line
from dlrun.ranges import BatchSize, Max, Min, OneOf, OptionalBatchSize

RGB = Annotated[int, OneOf(3)]

log = logging.getLogger("dlrun")

BANANA_URL = "http://d2l-data.s3-accelerate.amazonaws.com/banana-detection.zip"
BANANA_SHA1 = "5de26c8fce5ccdea9f91267273464dc968d20d72"


class DetectionData(InMemoryData):
    """Images scaled to [0, 1] per batch on the device; labels travel as they are."""

    num_classes: int

    def transform(self, x: Tensor) -> Tensor:
        return x.float().div_(255.0)


def fetch_zip(url: str, sha1: str, root: Path, folder: str, download: bool) -> Path:
    """root/folder, downloading and extracting url (checked against sha1) when it is missing and allowed."""
    from dlrun.data.download import download as fetch

    target = root / folder
    if target.is_dir():
        return target
    if not download:
        raise DlrunError(f"{target} not found; set data.download=true or extract {url} into {root}")
    archive = root / Path(url).name
    try:
        if not archive.is_file():
            log.info("%s not found: downloading %s", target, url)
            fetch(url, archive, sha1)
        with zipfile.ZipFile(archive) as z:
            z.extractall(root)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DlrunError(
            f"{target} not found and downloading {url} failed ({first_line(err)}); extract the zip "
            f"into {root} or point DLRUN_DATA_DIR (paths.data_dir) at a folder that holds it"
        ) from None
    if not target.is_dir():
        raise DlrunError(f"{archive} did not hold {folder}/; remove it and download again")
    return target


def read_label_folder(folder: Path) -> tuple[Tensor, Tensor]:
    """A banana-layout folder (images/ and label.csv) -> (images uint8, padded labels in image fractions)."""
    import numpy as np
    from PIL import Image

    csv_path = folder / "label.csv"
    if not csv_path.is_file():
        raise DlrunError(f"{csv_path} not found: a detection folder holds label.csv and images/")
    boxes: dict[str, list] = {}
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"img_name", "label", "xmin", "ymin", "xmax", "ymax"}
        if not need <= set(reader.fieldnames or ()):
            columns = ", ".join(sorted(need))
            raise DlrunError(f"{csv_path} needs the columns {columns}; it has {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                values = [float(row[k]) for k in ("label", "xmin", "ymin", "xmax", "ymax")]
            except (TypeError, ValueError):
                raise DlrunError(f"{csv_path}:{line}: label and box must be numbers, got {row}") from None
            boxes.setdefault(row["img_name"], []).append((line, values))
    if not boxes:
        raise DlrunError(f"{csv_path} lists no images")
    images, labels = [], []
    most = max(len(v) for v in boxes.values())
    for name, rows in boxes.items():
        path = folder / "images" / name
        if not path.is_file():
            raise DlrunError(f"{csv_path}:{rows[0][0]}: image {name} not found in {folder / 'images'}")
        with Image.open(path) as im:
            image = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
        _, h, w = image.shape
        label = torch.full((most, 5), -1.0)
        for r, (line, (cls, x1, y1, x2, y2)) in enumerate(rows):
            if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
                raise DlrunError(
                    f"{csv_path}:{line}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) of {name} is not inside its "
                    f"{w}x{h} image (need 0 <= xmin < xmax <= width, 0 <= ymin < ymax <= height)"
                )
            label[r] = torch.tensor([cls, x1 / w, y1 / h, x2 / w, y2 / h])
        images.append(image)
        labels.append(label)
    sizes = {tuple(im.shape) for im in images}
    if len(sizes) > 1:
        raise DlrunError(f"{folder}: images must share one size to batch, found {sorted(sizes)[:3]}")
    return torch.stack(images), torch.stack(labels)


def pad_objects(labels: Tensor, most: int) -> Tensor:
    if labels.shape[1] >= most:
        return labels
    pad = torch.full((labels.shape[0], most - labels.shape[1], 5), -1.0)
    return torch.cat([labels, pad], dim=1)


class BananaData(DetectionData):
    def __init__(
        self,
        root: str | Path,
        batch_size: BatchSize = 32,
        num_classes: Annotated[int, Min(1)] = 1,
        channels: RGB = 3,
        download: bool = True,
        val_batch_size: OptionalBatchSize = None,
        on_device: bool = False,
    ):
        super().__init__(batch_size, val_batch_size, on_device)
        self.num_classes, self.channels = num_classes, channels
        base = fetch_zip(BANANA_URL, BANANA_SHA1, Path(root), "banana-detection", download)
        self.x_train, self.y_train = read_label_folder(base / "bananas_train")
        self.x_val, self.y_val = read_label_folder(base / "bananas_val")
        most = max(self.y_train.shape[1], self.y_val.shape[1])
        self.y_train, self.y_val = pad_objects(self.y_train, most), pad_objects(self.y_val, most)
        found = int(max(self.y_train[..., 0].max(), self.y_val[..., 0].max())) + 1
        if found > num_classes:
            raise DlrunError(f"{base}: labels go up to {found - 1} but data.num_classes={num_classes}")
        log.info("read %d training and %d validation examples", len(self.x_train), len(self.x_val))


class CompositeDetectionData(DetectionData):
    """Objects pasted onto textured backgrounds (dlrun.data.composites), made from `seed`: train objects from
    Fashion-MNIST's training split, validation objects from its test split (`source=random`: blobs,
    no files). One class (all objects are "object", like the bananas) or, with `multiclass`, the 10 item
    classes."""

    def __init__(
        self,
        root: str | Path,
        batch_size: BatchSize = 32,
        num_train: Annotated[int, Min(1)] = 1000,
        num_val: Annotated[int, Min(1)] = 100,
        size: Annotated[int, Min(16)] = 256,
        max_objects: Annotated[int, Min(1)] = 1,
        min_scale: Annotated[float, Min(0.02), Max(1)] = 0.15,
        max_scale: Annotated[float, Min(0.02), Max(1)] = 0.5,
        multiclass: bool = False,
        num_classes: Annotated[int, Min(1)] = 1,
        channels: RGB = 3,
        source: Literal["fashion_mnist", "random"] = "fashion_mnist",
        seed: int = 0,
        download: bool = True,
        val_batch_size: OptionalBatchSize = None,
        on_device: bool = False,
    ):
        super().__init__(batch_size, val_batch_size, on_device)
        train_objects, val_objects, object_classes = load_objects(source, root, download)
        found = object_classes if multiclass else 1
        if found != num_classes:
            raise DlrunError(
                f"data.num_classes={num_classes} but the objects have {found} class(es) "
                f"(data.multiclass={multiclass}); set data.num_classes={found}"
            )
        self.num_classes, self.channels = num_classes, channels
        options = dict(
            max_objects=max_objects, min_scale=min_scale, max_scale=max_scale, multiclass=multiclass
        )
        (self.x_train, self.y_train, _), (self.x_val, self.y_val, _) = make_splits(
            train_objects, val_objects, num_train, num_val, size, size, seed, **options
        )
