"""Semantic segmentation: the bilinear kernel, FCN's shapes, the VOC colormap and folder reader, mIoU, the
offline composites, and a short run through dl-run."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from torch import nn
from torch.nn import functional as F

from dlrun.data.segmentation import (
    VOC_COLORMAP,
    CompositeSegmentationData,
    VOCSegmentationData,
    colormap_to_label,
)
from dlrun.errors import DlrunError
from dlrun.models.fcn import FCN, bilinear_kernel
from dlrun.tasks.segmentation import SegmentationTask


def test_bilinear_kernel_is_the_books_and_upsamples_bilinearly():
    k = bilinear_kernel(1, 1, 4)[0, 0]
    row = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(k, row[:, None] * row[None, :])
    conv = nn.ConvTranspose2d(3, 3, kernel_size=4, padding=1, stride=2, bias=False)
    conv.weight.data.copy_(bilinear_kernel(3, 3, 4))
    x = torch.rand(1, 3, 8, 10)
    up, ref = conv(x), F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert up.shape == (1, 3, 16, 20)
    assert torch.allclose(up[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-6)  # borders: zero padding


def test_fcn_maps_back_to_the_input_size_and_starts_bilinear():
    model = FCN(num_classes=5, weights=None).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 5, 64, 96)
    assert torch.equal(model.transpose_conv.weight, bilinear_kernel(5, 5, 64))
    assert [type(m).__name__ for m in model][-4:] == ["Sequential", "Sequential", "Conv2d", "ConvTranspose2d"]


def test_missing_pretrained_weights_say_so(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(DlrunError, match="model.weights=DEFAULT: torchvision's ResNet-18 weights are not in"):
        FCN(num_classes=3, weights="DEFAULT")


def test_voc_colormap_to_classes():
    label = torch.zeros(3, 2, 3, dtype=torch.uint8)
    label[:, 0, 1] = torch.tensor(VOC_COLORMAP[15], dtype=torch.uint8)  # person
    label[:, 1, 2] = torch.tensor(VOC_COLORMAP[20], dtype=torch.uint8)  # tv/monitor
    label[:, 1, 0] = torch.tensor([224, 224, 192], dtype=torch.uint8)  # the void border: background
    assert colormap_to_label(label, "x.png").tolist() == [[0, 15, 0], [0, 0, 20]]
    label[:, 0, 2] = torch.tensor([1, 2, 3], dtype=torch.uint8)
    with pytest.raises(
        DlrunError, match=r"x.png: pixel \(2, 0\) has colour \(1, 2, 3\), which is not in the VOC"
    ):
        colormap_to_label(label, "x.png")


def write_voc(root, sizes: dict, bad_colour: bool = False):
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    for split, names in (("train", list(sizes)), ("val", list(sizes)[:1])):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    for name, (h, w) in sizes.items():
        Image.fromarray(np.random.randint(0, 256, (h, w, 3), dtype=np.uint8)).save(
            voc / "JPEGImages" / f"{name}.jpg"
        )
        classes = np.random.randint(0, 21, (h, w))
        colours = np.array(VOC_COLORMAP, dtype=np.uint8)[classes]
        if bad_colour:
            colours[0, 0] = (9, 9, 9)
        Image.fromarray(colours).save(voc / "SegmentationClass" / f"{name}.png")
    return voc


def test_dl_run_prints_one_line_for_a_mask_with_an_unknown_colour(tmp_path):
    write_voc(tmp_path, {"a": (40, 50)}, bad_colour=True)
    args = ["data=voc_seg", "model=fcn", "task=segmentation", f"paths.data_dir={tmp_path}",
            "data.download=false", "data.crop=[32,48]", "model.weights=null", "logger=none"]  # fmt: skip
    proc = run_cli(args, tmp_path, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "a.png: pixel (0, 0) has colour (9, 9, 9), which is not in the VOC colormap" in errors[0]


def test_voc_folder_is_read_filtered_and_cropped(tmp_path):
    write_voc(tmp_path, {"a": (40, 50), "b": (20, 50), "c": (36, 64)})
    data = VOCSegmentationData(root=tmp_path, batch_size=2, crop=[32, 48], download=False)
    assert len(data.train_images) == 2  # b is smaller than the crop
    data.setup(torch.device("cpu"), seed=3)
    ((x, y),) = list(data.train_loader(epoch=0))
    assert x.shape == (2, 3, 32, 48) and y.shape == (2, 32, 48) and y.dtype == torch.uint8
    (again,) = list(data.train_loader(epoch=0))
    assert torch.equal(again[1], y)  # crops come from (seed, epoch, index)
    first, second = list(data.val_loader()), list(data.val_loader())
    assert torch.equal(first[0][0], second[0][0])


def test_voc_errors_are_one_line(tmp_path):
    write_voc(tmp_path, {"a": (40, 50)}, bad_colour=True)
    with pytest.raises(DlrunError, match=r"a.png: pixel \(0, 0\) has colour \(9, 9, 9\)"):
        VOCSegmentationData(root=tmp_path, crop=[32, 48], download=False)
    (tmp_path / "VOCdevkit/VOC2012/JPEGImages/a.jpg").unlink()
    with pytest.raises(DlrunError, match=r"train.txt:1: JPEGImages/a.jpg not found"):
        VOCSegmentationData(root=tmp_path, crop=[32, 48], download=False)
    with pytest.raises(DlrunError, match="VOC2012 not found; set data.download=true"):
        VOCSegmentationData(root=tmp_path / "elsewhere", download=False)


def test_miou_and_accuracy_by_hand():
    """Truth [0 0 1 1], prediction [0 1 1 1]: acc 3/4; IoU class 0 = 1/2, class 1 = 2/3."""
    logits = torch.tensor([[9.0, 0], [0, 9], [0, 9], [0, 9]]).T.reshape(1, 2, 1, 4)

    class Fixed(nn.Module):
        def forward(self, x):
            return logits

    task = SegmentationTask()
    _, stats, n = task.step(Fixed(), (torch.zeros(1, 3, 1, 4), torch.tensor([[[0, 0, 1, 1]]])))
    metrics = task.compute({k: v.item() for k, v in stats.items()}, n)
    assert metrics["acc"] == pytest.approx(0.75) and metrics["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_composite_masks_are_reproducible():
    options = dict(root="unused", source="random", num_train=4, num_val=2, height=32, width=64, num_classes=5)
    a, b = CompositeSegmentationData(**options), CompositeSegmentationData(**options)
    assert torch.equal(a.y_train, b.y_train) and a.y_train.shape == (4, 32, 64)
    assert a.y_train.max() <= 4 and (a.y_train > 0).any() and (a.y_train == 0).any()
    with pytest.raises(DlrunError, match="set data.num_classes=5"):
        CompositeSegmentationData(**(options | {"num_classes": 11}))


def test_fcn_runs_end_to_end_and_draws(tmp_path):
    run_dir = tmp_path / "run"
    args = ["experiment=d2l/fcn_fmnist", "data.source=random", "data.num_classes=5", "data.num_train=8",
            "data.num_val=4", "data.height=64", "data.width=64", "data.batch_size=4", "trainer.max_epochs=1",
            "logger=none", "task.num_drawn=2", f"hydra.run.dir={run_dir}"]  # fmt: skip
    run_cli(args, cwd=tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["final"]["val/miou"] <= 1 and 0 <= metrics["final"]["val/acc"] <= 1
    drawn = sorted((run_dir / "segmentation").iterdir())
    assert [p.name for p in drawn] == ["000.png", "001.png"]
    assert Image.open(drawn[0]).size == (3 * 64, 64)  # image | prediction | truth
