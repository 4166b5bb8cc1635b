"""The book's Kaggle image competitions (13.13 CIFAR-10, 13.14 ImageNet Dogs) in their real layouts:
`<root>/train/<id>.<ext>`, a labels CSV (`id,label`), `<root>/test/<id>.<ext>`.

The book's reorganisation (reorg_train_valid, reorg_test) turns them into image folders under
`<reorg_dir>/{train,valid,train_valid,test/unknown}/<label>/`: each label gives max(1, floor(n_min *
valid_ratio)) of its images to `valid`, n_min being the rarest label's count. Files are hard-linked where the
file system allows it, else copied. `final=true` trains on train_valid (the book's last fit).
"""

import csv
import logging
import math
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

import torch

from dlrun.data.augment import Augment
from dlrun.data.folders import DeviceBatches, ImageFolderData, fetch_archive, image_files
from dlrun.errors import DlrunError
from dlrun.ranges import BatchSize, Max, Min, OptionalBatchSize

log = logging.getLogger("dlrun")
DONE = ".reorg_done"


def read_labels(path: Path) -> dict[str, str]:
    """The labels CSV (header, then `id,label` rows) as {id: label}, as the book's read_csv_labels."""
    if not path.is_file():
        raise DlrunError(f"no labels file {path} (the competition's CSV of id,label rows)")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    bad = next((i for i, row in enumerate(rows, start=2) if len(row) < 2), None)
    if bad is not None:
        raise DlrunError(f"{path}, line {bad}: expected id,label")
    return {row[0]: row[1] for row in rows}


def place(src: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / src.name
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy(src, dst)


def reorganize(root: Path, out: Path, labels_csv: str, valid_ratio: float) -> None:
    """The book's reorg_train_valid and reorg_test, once (a marker file records a finished reorganisation)."""
    if (out / DONE).is_file():
        return
    labels = read_labels(root / labels_csv)
    train = {p.stem: p for p in image_files(root / "train")} if (root / "train").is_dir() else {}
    if not train:
        raise DlrunError(f"no images in {root / 'train'} (expected train/<id>.png or .jpg files)")
    missing = sorted(set(labels) - set(train))
    if missing:
        raise DlrunError(
            f"{root / labels_csv} names {len(missing)} image(s) not in {root / 'train'}: {missing[0]}"
        )
    unlabelled = sorted(set(train) - set(labels))
    if unlabelled:
        raise DlrunError(f"{train[unlabelled[0]]} has no row in {root / labels_csv}")
    n_valid = max(1, math.floor(min(Counter(labels.values()).values()) * valid_ratio))
    given: Counter = Counter()
    log.info("reorganising %s into %s (%d validation images per label)", root, out, n_valid)
    for name in sorted(train):
        label, path = labels[name], train[name]
        place(path, out / "train_valid" / label)
        if given[label] < n_valid:
            place(path, out / "valid" / label)
            given[label] += 1
        else:
            place(path, out / "train" / label)
    for path in image_files(root / "test") if (root / "test").is_dir() else []:
        place(path, out / "test" / "unknown")
    (out / DONE).write_text("")


def id_order(name: str):
    """Numeric ids in numeric order (CIFAR-10's 1, 2, ..., 10), other ids by name."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


class KaggleImageData(ImageFolderData):
    """A Kaggle image competition: reorganised as the book does, trained as an image folder, and with
    `mode=predict` a submission: `label` (`id,label` per test image, in id order: CIFAR-10) or
    `probabilities` (`id` then one column per class, in class order: Dogs)."""

    def __init__(
        self,
        root: str | Path,
        batch_size: BatchSize,
        size: int,
        labels_csv: str = "trainLabels.csv",
        valid_ratio: Annotated[float, Min(0), Max(1)] = 0.1,
        final: bool = False,
        reorg_dir: str | Path | None = None,
        submission: Literal["label", "probabilities"] = "label",
        num_classes: int | None = None,
        channels: int = 3,
        resize: int | None = None,
        augment: Augment | None = None,
        num_workers: Annotated[int, Min(0)] = 4,
        prefetch_factor: Annotated[int, Min(1)] = 2,
        pin_memory: bool = True,
        val_batch_size: OptionalBatchSize = None,
        url: str | None = None,
        sha1: str | None = None,
    ):
        root = Path(root)
        if not root.is_dir():
            if not url:
                raise DlrunError(f"data.root={root}: no such folder (expected train/, test/, {labels_csv})")
            fetch_archive(url, sha1, root)
        out = Path(reorg_dir) if reorg_dir else root / "train_valid_test"
        reorganize(root, out, labels_csv, valid_ratio)
        super().__init__(
            out,
            batch_size,
            size,
            num_classes,
            channels,
            resize,
            augment,
            num_workers,
            prefetch_factor,
            pin_memory,
            val_batch_size,
            train_dir="train_valid" if final else "train",
            val_dir="valid",
        )
        self.submission = submission
        test = out / "test" / "unknown"
        self.test_files = sorted(image_files(test) if test.is_dir() else [], key=lambda p: id_order(p.stem))

    def test_loader(self) -> DeviceBatches:
        if not self.test_files:
            raise DlrunError(f"no test images in {self.root / 'test' / 'unknown'} to predict")
        loader = self.loader(self.test_files, [0] * len(self.test_files), train=False)
        return DeviceBatches(loader, self.val_sampler(len(self.test_files)), self.device)

    def write_submission(self, probs: torch.Tensor, path: Path) -> Path:
        ids = [p.stem for p in self.test_files]
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            if self.submission == "label":
                writer.writerow(["id", "label"])
                for name, k in zip(ids, probs.argmax(dim=1).tolist(), strict=True):
                    writer.writerow([name, self.classes[k]])
            else:
                writer.writerow(["id", *self.classes])
                for name, row in zip(ids, probs.tolist(), strict=True):
                    writer.writerow([name, *row])
        return path
