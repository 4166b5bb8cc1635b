"""Images that do not fit in memory, streamed from folders: `<root>/<split>/<class>/<image file>`.

A DataLoader with worker processes decodes the files (torchvision.io), augments each example in the workers
(seeded by its key: (seed, epoch, batch, position in the global batch)), and hands pinned batches to the
device. The batch sampler is dlrun's EpochBatchSampler: the epoch order comes from (seed, epoch) alone, and a
mid-epoch resume starts at batch `skip` without reading the files of the batches before it.
"""

import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from dlrun.data.augment import Augment, mix
from dlrun.data.base import DataModule
from dlrun.data.sampling import EpochBatchSampler
from dlrun.errors import DlrunError, first_line
from dlrun.ranges import BatchSize, Min, OptionalBatchSize

log = logging.getLogger("dlrun")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scan(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """The image files under folder/<class>/ (classes sorted by name, as torchvision's ImageFolder) and
    their class indices; `classes` given: the folder's classes must be among them."""
    if not folder.is_dir():
        raise DlrunError(f"no folder {folder} (expected <class>/<image> folders there)")
    found = class_folders(folder)
    if not found:
        raise DlrunError(f"{folder} holds no class folders (expected {folder}/<class>/<image files>)")
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DlrunError(f"{folder} has class folders the training set lacks: {', '.join(unknown[:5])}")
    files, labels = [], []
    for name in found:
        members = image_files(folder / name)
        if not members:
            raise DlrunError(f"{folder / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files += members
        labels += [classes.index(name)] * len(members)
    return files, labels, classes


@dataclass
class Failure:
    """What a worker returns instead of raising (a worker's exception would arrive as a long traceback)."""

    message: str


def read_image(path: Path, channels: int) -> torch.Tensor:
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec once per image; its decoders work
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_image(str(path), mode=mode)


class ImageFiles(Dataset):
    """Items: (index, key) pairs from SeededBatches, giving the decoded, resized, augmented image, label."""

    def __init__(
        self, files, labels, channels: int, resize: int | None, augment: Augment | None, train: bool
    ):
        self.files, self.labels = files, labels
        self.channels, self.resize, self.augment, self.train = channels, resize, augment, train

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]):
        index, key = item
        path = self.files[index]
        try:
            image = read_image(path, self.channels)
        except Exception as err:  # noqa: BLE001 - any decoding failure names the file
            return Failure(f"cannot read image {path}: {first_line(err)}")
        x = TF.to_dtype(image, torch.float32, scale=True)
        if self.resize:
            x = TF.resize(x, [self.resize, self.resize], antialias=True)
        if self.augment is not None:
            x = self.augment.sample(x, self.train, key)
        return x, self.labels[index]


def collate(items: list):
    failure = next((item for item in items if isinstance(item, Failure)), None)
    if failure is not None:
        return failure
    shapes = {tuple(x.shape) for x, _ in items}
    if len(shapes) > 1:
        return Failure(
            f"images of different sizes in one batch ({', '.join(map(str, sorted(shapes)[:3]))}); set "
            "data.resize, or an augment option that crops to one size"
        )
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


class SeededBatches:
    """The DataLoader's batch sampler: an EpochBatchSampler's batches as (index, key) pairs, the key from
    (seed, epoch, batch, position in the global batch), so augmentation does not depend on the world size."""

    def __init__(self, sampler: EpochBatchSampler | None = None):
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        s = self.sampler
        for index, batch in enumerate(s.global_batches(), start=s.skip):
            keys = torch.tensor([mix(s.seed, s.epoch, index, pos) for pos in range(len(batch))])
            yield list(zip(s.share(batch).tolist(), s.share(keys).tolist(), strict=True))


class DeviceBatches:
    """One epoch of a DataLoader's batches, moved to the device; `len()` counts the skipped batches too."""

    def __init__(self, loader: DataLoader, sampler: EpochBatchSampler, device: torch.device):
        self.loader, self.sampler, self.device = loader, sampler, device

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        self.loader.batch_sampler.sampler = self.sampler  # read when the DataLoader's iterator starts
        non_blocking = self.device.type == "cuda"
        for batch in self.loader:
            if isinstance(batch, Failure):
                raise DlrunError(batch.message)
            x, y = batch
            yield x.to(self.device, non_blocking=non_blocking), y.to(self.device, non_blocking=non_blocking)


def fetch_archive(url: str, sha1: str | None, root: Path) -> None:
    """Download a zip (checked against its sha1) next to root and unpack it there: the book's data sets."""
    from dlrun.data.download import download

    archive = root.parent / Path(url).name
    log.info("%s not found: downloading %s", root, url)
    try:
        if not archive.is_file():
            download(url, archive, sha1)
        with zipfile.ZipFile(archive) as z:
            z.extractall(root.parent)
    except Exception as err:  # noqa: BLE001 - no network, a bad archive: one line naming the folder
        raise DlrunError(
            f"{root} not found, and downloading {url} failed ({first_line(err)}); unpack the archive there, "
            "or point data.root (or DLRUN_DATA_DIR) at a copy"
        ) from None


class ImageFolderData(DataModule):
    """`root/<train_dir>/<class>/*` and `root/<val_dir>/<class>/*`, any size of JPEG/PNG, streamed by a
    DataLoader (workers, pinned memory, prefetch). Images are decoded to `channels`, resized to `resize`
    (when set) and augmented per example in the workers; the model sees `size` x `size` batches."""

    def __init__(
        self,
        root: str | Path,
        batch_size: BatchSize,
        size: int,
        num_classes: int | None = None,
        channels: int = 3,
        resize: int | None = None,
        augment: Augment | None = None,
        num_workers: Annotated[int, Min(0)] = 4,
        prefetch_factor: Annotated[int, Min(1)] = 2,
        pin_memory: bool = True,
        val_batch_size: OptionalBatchSize = None,
        train_dir: str = "train",
        val_dir: str | None = "val",
        drop_last: bool = False,
        url: str | None = None,
        sha1: str | None = None,
    ):
        super().__init__(batch_size, val_batch_size, drop_last)
        self.root = Path(root)
        if not self.root.is_dir() and url:
            fetch_archive(url, sha1, self.root)
        if not (self.root / train_dir).is_dir():
            raise DlrunError(
                f"data.root={root}: no folder {self.root / train_dir} (expected {train_dir}/<class>/ and "
                f"{val_dir}/<class>/ image folders there)"
            )
        self.size, self.channels, self.resize, self.augment = size, channels, resize, augment
        self.num_workers, self.prefetch_factor, self.pin_memory = num_workers, prefetch_factor, pin_memory
        self.train_files, self.train_labels, self.classes = scan(self.root / train_dir)
        self.val_files, self.val_labels = [], []
        if val_dir:
            self.val_files, self.val_labels, _ = scan(self.root / val_dir, self.classes)
        if num_classes is not None and num_classes != len(self.classes):
            raise DlrunError(
                f"data.num_classes={num_classes} but {self.root / train_dir} holds {len(self.classes)} class "
                "folders; remove the override"
            )
        self.num_classes = len(self.classes)
        self.model_kwargs = {"num_classes": self.num_classes}
        self._loaders: dict[bool, DataLoader] = {}

    def loader(self, files, labels, train: bool, batch_sampler: SeededBatches | None = None) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            ImageFiles(files, labels, self.channels, self.resize, self.augment, train),
            batch_sampler=batch_sampler or SeededBatches(),
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.pin_memory and self.device.type == "cuda",
            prefetch_factor=self.prefetch_factor if workers else None,
            persistent_workers=workers > 0,
        )

    def _epoch(self, train: bool, sampler: EpochBatchSampler) -> DeviceBatches:
        if train not in self._loaders:  # built once: persistent workers serve every epoch
            files, labels = (
                (self.train_files, self.train_labels) if train else (self.val_files, self.val_labels)
            )
            self._loaders[train] = self.loader(files, labels, train)
        return DeviceBatches(self._loaders[train], sampler, self.device)

    def train_loader(self, epoch: int = 0, skip: int = 0) -> DeviceBatches:
        return self._epoch(True, self.train_sampler(len(self.train_files), epoch, skip))

    def val_loader(self):
        if not self.val_files:
            return []
        return self._epoch(False, self.val_sampler(len(self.val_files)))
