"""data=kaggle_cifar10 / kaggle_dog: the competitions' real layouts, the book's reorganisation, submission."""

import csv
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from torchvision.io import write_jpeg, write_png

from dlrun.data.kaggle_images import KaggleImageData
from dlrun.errors import DlrunError

# torchvision 0.29 points to TorchCodec on every image it encodes or decodes
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

LABELS = ["airplane", "cat", "frog"]


def make_layout(root: Path, n_train=24, n_test=12, labels_csv="trainLabels.csv", jpeg=False) -> Path:
    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
    rows = []
    for i in range(1, n_train + n_test + 1):
        image = (torch.rand(3, 8, 8, generator=g) * 255).to(torch.uint8)
        split = "train" if i <= n_train else "test"
        name = str(i) if split == "train" else str(i - n_train)
        path = root / split / f"{name}.{'jpg' if jpeg else 'png'}"
        (write_jpeg if jpeg else write_png)(image, str(path))
        if split == "train":
            rows.append([name, LABELS[i % 3] if i > 3 else "frog"])
    with (root / labels_csv).open("w", newline="") as f:
        csv.writer(f).writerows([["id", "label"], *rows])
    return root


def build(root, **kw):
    kw = {"batch_size": 4, "size": 8, "num_workers": 0} | kw
    data = KaggleImageData(root, **kw)
    data.setup(torch.device("cpu"), seed=0)
    return data


def test_the_books_reorganisation(tmp_path):
    root = make_layout(tmp_path / "cifar")
    data = build(root, valid_ratio=0.25)
    out = root / "train_valid_test"
    # the rarest label has 7 images: max(1, floor(7 * 0.25)) = 1 validation image per label
    assert {p.name: len(list(p.iterdir())) for p in (out / "valid").iterdir()} == dict.fromkeys(LABELS, 1)
    assert sum(1 for _ in (out / "train_valid").rglob("*.png")) == 24
    assert sum(1 for _ in (out / "train").rglob("*.png")) == 21
    assert data.classes == LABELS and len(data.train_files) == 21 and len(data.val_files) == 3
    assert [p.stem for p in data.test_files] == [str(i) for i in range(1, 13)]  # numeric order
    assert len(build(root, final=True).train_files) == 24


def test_bad_layouts_fail_with_one_line(tmp_path):
    root = make_layout(tmp_path / "a")
    (root / "train" / "5.png").unlink()
    with pytest.raises(DlrunError, match=r"names 1 image\(s\) not in .*train: 5"):
        build(root)
    root = make_layout(tmp_path / "b")
    (root / "train" / "7.png").write_bytes(b"garbage")
    with pytest.raises(DlrunError, match=r"cannot read image .*7\.png"):
        list(build(root, valid_ratio=0.0).train_loader())  # every batch read: 7.png among them
    with pytest.raises(DlrunError, match="no such folder"):
        build(tmp_path / "nothing")


def test_dog_submission_has_a_probability_column_per_breed(tmp_path):
    root = make_layout(tmp_path / "dogs", labels_csv="labels.csv", jpeg=True)
    data = build(root, labels_csv="labels.csv", submission="probabilities")
    probs = torch.softmax(torch.randn(12, 3), dim=1)
    data.write_submission(probs, tmp_path / "submission.csv")
    rows = list(csv.reader((tmp_path / "submission.csv").open()))
    assert rows[0] == ["id", *LABELS] and len(rows) == 13
    assert rows[1][0] == "1" and float(rows[1][2]) == pytest.approx(probs[0, 1].item())


def test_kaggle_cifar10_trains_and_predicts_a_submission(tmp_path):
    root = make_layout(tmp_path / "cifar")
    common = [
        "experiment=d2l/kaggle_cifar10",
        f"data.root={root}",
        "data.num_workers=1",
        "data.num_classes=3",
        "augment=flip",
        "model=mlp",
        "data.size=8",
        "logger=none",
    ]
    run_cli([*common, "trainer.max_epochs=1", "hydra.run.dir=run"], cwd=tmp_path)
    run_cli([*common, "mode=predict", "ckpt_path=run", "hydra.run.dir=pred"], cwd=tmp_path)
    rows = list(csv.reader((tmp_path / "pred" / "submission.csv").open()))
    assert rows[0] == ["id", "label"] and [r[0] for r in rows[1:]] == [str(i) for i in range(1, 13)]
    assert {r[1] for r in rows[1:]} <= set(LABELS)
