"""data=image_folder: files streamed by a DataLoader, in the order and with the resume of in-memory sets."""

from pathlib import Path

import pytest
import torch
from conftest import run_cli
from torchvision.io import decode_image, write_jpeg, write_png
from torchvision.transforms import v2

from dlrun.data.augment import Augment
from dlrun.data.folders import ImageFolderData
from dlrun.data.sampling import EpochBatchSampler
from dlrun.errors import DlrunError

# torchvision 0.29 points to TorchCodec on every image it encodes or decodes
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

CLASSES = ("cat", "dog", "eel")


def make_folder(root: Path, per_class=(10, 3), size=12, sizes_vary=False) -> Path:
    g = torch.Generator().manual_seed(0)
    for split, n in zip(("train", "val"), per_class, strict=True):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h = size + (i if sizes_vary else 0)
                image = (torch.rand(3, h, size, generator=g) * 255).to(torch.uint8)
                if i % 2:
                    write_png(image, str(root / split / c / f"{i:03d}.png"))
                else:
                    write_jpeg(image, str(root / split / c / f"{i:03d}.jpg"))
    return root


def data_for(root, **kw) -> ImageFolderData:
    kw = {"batch_size": 4, "size": 12, "num_workers": 0} | kw
    data = ImageFolderData(root, **kw)
    data.setup(torch.device("cpu"), seed=3)
    return data


def test_batches_follow_the_epoch_order_of_in_memory_sets(tmp_path):
    data = data_for(make_folder(tmp_path))
    assert data.classes == list(CLASSES) and data.model_kwargs == {"num_classes": 3}
    images = torch.stack([decode_image(str(f)) for f in data.train_files]).float() / 255
    labels = torch.tensor(data.train_labels)
    sampler = EpochBatchSampler(len(labels), 4, shuffle=True, seed=3, epoch=2)
    batches = list(data.train_loader(epoch=2))
    assert len(batches) == len(sampler) == 8
    for (x, y), idx in zip(batches, sampler, strict=True):
        assert torch.equal(y, labels[idx]) and torch.allclose(x, images[idx])
    val = list(data.val_loader())
    assert torch.equal(torch.cat([y for _, y in val]), torch.tensor(data.val_labels))


def test_resume_skips_batches_without_reading_their_files(tmp_path):
    data = data_for(make_folder(tmp_path))
    sampler = EpochBatchSampler(len(data.train_files), 4, shuffle=True, seed=3, epoch=1)
    seen_first = next(iter(sampler))
    full = list(data.train_loader(epoch=1))
    for i in seen_first.tolist():  # the first batch's files become unreadable
        Path(data.train_files[i]).write_bytes(b"not an image")
    for workers in (0, 2):
        resumed = list(data_for(tmp_path, num_workers=workers).train_loader(epoch=1, skip=1))
        assert len(resumed) == len(full) - 1
        for (xa, ya), (xb, yb) in zip(full[1:], resumed, strict=True):
            assert torch.equal(ya, yb) and torch.equal(xa, xb)
    with pytest.raises(DlrunError, match=r"cannot read image .*\.(png|jpg)"):
        list(data_for(tmp_path, num_workers=2).train_loader(epoch=1))


def test_workers_give_the_same_augmented_batches_as_the_main_process(tmp_path):
    make_folder(tmp_path, sizes_vary=True)
    aug = Augment(train=[v2.RandomResizedCrop(8), v2.RandomHorizontalFlip()], test=[v2.CenterCrop(8)])
    main = data_for(tmp_path, augment=aug, size=8)
    workers = data_for(tmp_path, augment=aug, size=8, num_workers=2, prefetch_factor=1)
    torch.manual_seed(0)
    a = list(main.train_loader(epoch=1))
    torch.manual_seed(99)  # neither the global RNG nor the worker seeds matter
    b = list(workers.train_loader(epoch=1))
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.shape[-2:] == (8, 8) and torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][0], next(iter(main.train_loader(epoch=2)))[0])
    assert next(iter(workers.val_loader()))[0].shape[-2:] == (8, 8)
    again = list(workers.train_loader(epoch=1))  # the persistent workers serve the next epoch
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, again, strict=True))


def test_bad_folders_fail_with_one_line(tmp_path):
    with pytest.raises(DlrunError, match="no folder .*train"):
        data_for(tmp_path / "missing")
    root = make_folder(tmp_path / "a")
    (root / "train" / "fox").mkdir()
    with pytest.raises(DlrunError, match="fox holds no images"):
        data_for(root)
    root = make_folder(tmp_path / "b")
    (root / "val" / "emu").mkdir()
    with pytest.raises(DlrunError, match="class folders the training set lacks: emu"):
        data_for(root)
    with pytest.raises(DlrunError, match="data.num_classes=5 but .* holds 3 class folders"):
        data_for(make_folder(tmp_path / "c"), num_classes=5)
    root = make_folder(tmp_path / "d", sizes_vary=True)
    with pytest.raises(DlrunError, match="different sizes.*data.resize"):
        list(data_for(root).train_loader(epoch=1))
    assert next(iter(data_for(root, resize=10).train_loader()))[0].shape[-2:] == (10, 10)


def test_dl_run_trains_on_an_image_folder_and_counts_its_classes(tmp_path):
    root = make_folder(tmp_path / "imgs")
    args = [
        "data=image_folder",
        f"data.root={root}",
        "data.size=12",
        "data.num_workers=1",
        "data.batch_size=8",
        "augment=flip",
        "trainer.max_epochs=1",
        "logger=none",
    ]
    out = run_cli([*args, "--cfg", "job", "--resolve"], cwd=tmp_path)
    assert "num_classes: 3" in out.stdout
    run_cli(args, cwd=tmp_path)
    missing = run_cli(["data=image_folder", f"data.root={tmp_path / 'nothing'}"], cwd=tmp_path, check=False)
    assert missing.returncode != 0 and "no folder" in missing.stderr and "Traceback" not in missing.stderr
