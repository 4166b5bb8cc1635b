"""torchvision's MNIST-format datasets (MNIST, FashionMNIST, KMNIST, ...) and CIFAR-10/100, read once into
memory."""

import logging
from pathlib import Path
from typing import Annotated

import torch
import torchvision

from dlrun.data.augment import Augment
from dlrun.data.images import InMemoryImageData
from dlrun.errors import DlrunError, first_line
from dlrun.ranges import BatchSize, Min, OptionalBatchSize

log = logging.getLogger("dlrun")


def open_torchvision(dataset: str, root: str | Path, train: bool, download: bool):
    """Open a torchvision dataset from root, downloading it (torchvision's URLs and md5s) when allowed."""
    cls = getattr(torchvision.datasets, dataset, None)
    if cls is None:
        raise DlrunError(f"data.dataset={dataset!r} is not a torchvision dataset")
    try:
        return cls(root=str(root), train=train, download=False)
    except RuntimeError:
        pass
    if hasattr(cls, "resources"):  # the MNIST family: <root>/<dataset>/raw/
        raw = Path(root) / dataset / "raw"
        expected = ", ".join(Path(url).name.removesuffix(".gz") for url, _ in cls.resources)
    else:  # CIFAR-10/100: <root>/cifar-10-batches-py/ or the archive
        raw = Path(root) / cls.base_folder
        expected = f"{cls.base_folder}/ or {cls.filename}, from {cls.url}"
    where = f"{dataset} not found in {raw.resolve()} (expected {expected})"
    if not download:
        raise DlrunError(f"{where}; set data.download=true or put the files there") from None
    log.info("%s not found under %s: downloading", dataset, Path(root).resolve())
    try:
        return cls(root=str(root), train=train, download=True)
    except Exception as err:
        reason = first_line(err)
        raise DlrunError(
            f"{where}, and downloading failed ({reason}); copy the files there, or point "
            f"DLRUN_DATA_DIR (paths.data_dir) at a folder that holds {raw.name}/"
        ) from None


class TorchvisionImageData(InMemoryImageData):
    def __init__(
        self,
        dataset: str,
        root: str | Path,
        batch_size: BatchSize,
        channels: int,
        num_classes: int,
        size: int,
        resize: int | None = None,
        download: bool = True,
        val_batch_size: OptionalBatchSize = None,
        on_device: bool = False,
        augment: Augment | None = None,
        classes: list[int] | None = None,
        train_per_class: Annotated[int, Min(1)] | None = None,
    ):
        super().__init__(batch_size, channels, num_classes, size, resize, val_batch_size, on_device, augment)
        if classes is not None and len(classes) != num_classes:
            raise DlrunError(
                f"data.classes has {len(classes)} classes but data.num_classes={num_classes}; "
                f"set data.num_classes={len(classes)}"
            )
        train = open_torchvision(dataset, root, train=True, download=download)
        test = open_torchvision(dataset, root, train=False, download=download)
        self.x_train, self.y_train = select(*self._tensors(train), classes, train_per_class, dataset)
        self.x_val, self.y_val = select(*self._tensors(test), classes, None, dataset)
        self.check(dataset)

    @staticmethod
    def _tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(ds.data)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        elif x.shape[-1] in (1, 3):  # CIFAR: N, H, W, C
            x = x.permute(0, 3, 1, 2)
        return x.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)


def select(x: torch.Tensor, y: torch.Tensor, classes, per_class: int | None, name: str):
    """Keep the images of `classes` (relabelled 0..k-1 in the order given; None: all), at most the first
    `per_class` of each in file order (None: all of them)."""
    if classes is None and per_class is None:
        return x, y
    classes = list(range(int(y.max()) + 1)) if classes is None else [int(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise DlrunError(f"data.classes={classes} names a class twice")
    keep, labels = [], []
    for new, old in enumerate(classes):
        index = (y == old).nonzero().flatten()
        if len(index) == 0:
            raise DlrunError(f"data.classes: {name} has no images of class {old} (labels 0..{int(y.max())})")
        if per_class is not None:
            if len(index) < per_class:
                raise DlrunError(
                    f"data.train_per_class={per_class}: {name} has only {len(index)} training images of "
                    f"class {old}"
                )
            index = index[:per_class]
        keep.append(index)
        labels.append(torch.full((len(index),), new, dtype=torch.long))
    order = torch.cat(keep)
    return x[order], torch.cat(labels)
