"""Object detection: the book's anchors, labels, offsets and detections against its worked examples; TinySSD;
the banana-layout reader and the offline composites; mAP; a short run through dl-run."""

import json

import pytest
import torch
from conftest import run_cli, write_idx
from PIL import Image

from dlrun.data.detection import BananaData, CompositeDetectionData
from dlrun.errors import DlrunError
from dlrun.models.ssd import TinySSD
from dlrun.tasks.anchors import (
    box_center_to_corner,
    box_corner_to_center,
    multibox_detection,
    multibox_prior,
    multibox_target,
    offset_boxes,
    offset_inverse,
)
from dlrun.tasks.detection import DetectionTask, ap_histograms, average_precision


def test_catdog_anchor_count_and_first_box():
    """13.4: a 561x728 image, sizes [.75, .5, .25], ratios [1, 2, .5] -> 2,042,040 anchors; the book prints
    boxes[250, 250, 0] = (0.06, 0.07, 0.63, 0.82)."""
    y = multibox_prior(561, 728, [0.75, 0.5, 0.25], [1, 2, 0.5])
    assert y.shape == (1, 2042040, 4)
    first = y.reshape(561, 728, 5, 4)[250, 250, 0]
    assert torch.allclose(first, torch.tensor([0.06, 0.07, 0.63, 0.82]), atol=0.005)


def test_corner_center_round_trip():
    boxes = torch.tensor([[60.0, 45.0, 378.0, 516.0], [400.0, 112.0, 655.0, 493.0]])
    center = box_corner_to_center(boxes)
    assert torch.allclose(center[0], torch.tensor([219.0, 280.5, 318.0, 471.0]))
    assert torch.allclose(box_center_to_corner(center), boxes)


BOOK_GT = torch.tensor([[[0, 0.1, 0.08, 0.52, 0.92], [1, 0.55, 0.2, 0.9, 0.88]]])
BOOK_ANCHORS = torch.tensor(
    [[0, 0.1, 0.2, 0.3], [0.15, 0.2, 0.4, 0.4], [0.63, 0.05, 0.88, 0.98], [0.66, 0.45, 0.8, 0.8],
     [0.57, 0.3, 0.92, 0.9]]
)  # fmt: skip


def test_multibox_target_matches_the_book():
    """13.4's worked example: classes [0, 1, 2, 0, 2], its mask and offsets."""
    offsets, mask, classes = multibox_target(BOOK_ANCHORS[None], BOOK_GT)
    assert classes.tolist() == [[0, 1, 2, 0, 2]]
    assert mask.tolist() == [[0.0] * 4 + [1.0] * 8 + [0.0] * 4 + [1.0] * 4]
    book = [0, 0, 0, 0, 1.40, 10.0, 2.59, 7.18, -1.20, 0.269, 1.68, -1.57]
    book += [0, 0, 0, 0, -0.571, -1.00, 0, 0.626]
    assert torch.allclose(offsets[0], torch.tensor(book), atol=0.01)


def test_padding_boxes_are_ignored_and_batches_are_independent():
    padded = torch.cat([BOOK_GT, torch.full((1, 1, 5), -1.0)], dim=1)
    only_first = torch.tensor([[[0, 0.1, 0.08, 0.52, 0.92], [-1, -1, -1, -1, -1], [-1, -1, -1, -1, -1]]])
    offsets, mask, classes = multibox_target(BOOK_ANCHORS[None], torch.cat([padded, only_first]))
    assert classes.tolist() == [[0, 1, 2, 0, 2], [0, 1, 0, 0, 0]]  # the greedy pass gives box 0 anchor 1
    assert mask[1].sum() == 4


def test_offsets_invert():
    anchors = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.2, 0.9, 0.6]])
    boxes = torch.tensor([[0.12, 0.05, 0.45, 0.55], [0.4, 0.3, 0.8, 0.7]])
    assert torch.allclose(offset_inverse(anchors, offset_boxes(anchors, boxes)), boxes, atol=1e-5)


def test_multibox_detection_and_nms_match_the_book():
    """13.4: NMS at 0.5 keeps the 0.9 dog and the 0.9 cat; the 0.8 and 0.7 dogs overlap the first: -1."""
    anchors = torch.tensor([[0.1, 0.08, 0.52, 0.92], [0.08, 0.2, 0.56, 0.95], [0.15, 0.3, 0.62, 0.91],
                            [0.55, 0.2, 0.9, 0.88]])  # fmt: skip
    cls_probs = torch.tensor([[0.0] * 4, [0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.9]])
    out = multibox_detection(cls_probs[None], torch.zeros(1, 16), anchors[None], nms_threshold=0.5)[0]
    kept = sorted(tuple(round(v, 2) for v in row) for row in out[:2].tolist())
    assert kept == [(0.0, 0.9, 0.1, 0.08, 0.52, 0.92), (1.0, 0.9, 0.55, 0.2, 0.9, 0.88)]
    assert out[2:, 0].tolist() == [-1.0, -1.0] and torch.allclose(out[2:, 1], torch.tensor([0.8, 0.7]))
    # IoUs with the 0.9 dog: 0.74 (the 0.8 dog) and 0.55 (the 0.7 dog); at 0.6 the 0.7 dog stays
    out = multibox_detection(cls_probs[None], torch.zeros(1, 16), anchors[None], nms_threshold=0.6)[0]
    assert out[:, 0].tolist() in ([0, 1, 0, -1], [1, 0, 0, -1]) and out[2, 1] == pytest.approx(0.7)


def test_average_precision_by_hand():
    """Two boxes; detections .95 TP, .85 FP, .75 TP: precision 1, .5, .67 at recall .5, .5, 1 -> AP .833."""
    tp, fp = torch.zeros(10, dtype=torch.float64), torch.zeros(10, dtype=torch.float64)
    tp[9], fp[8], tp[7] = 1, 1, 1
    assert average_precision(tp, fp, 2) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision(tp, torch.zeros_like(fp), 2) == pytest.approx(1.0)
    assert average_precision(torch.zeros_like(tp), fp, 2) == 0.0


def test_ap_histograms_match_each_box_once():
    labels = torch.tensor([[[0, 0.1, 0.1, 0.5, 0.5], [0, 0.6, 0.6, 0.9, 0.9]]])
    det = torch.tensor([[[0, 0.95, 0.1, 0.1, 0.5, 0.5],     # TP: box 0
                         [0, 0.85, 0.11, 0.1, 0.5, 0.5],    # FP: box 0 is taken
                         [0, 0.75, 0.6, 0.6, 0.9, 0.9],     # TP: box 1
                         [-1, 0.5, 0.0, 0.0, 0.1, 0.1]]])  # fmt: skip
    tp, fp, gt = ap_histograms(det, labels, 1, 0.5, 100, 10)
    assert gt.tolist() == [2.0]
    assert tp[0].nonzero().reshape(-1).tolist() == [7, 9] and fp[0].nonzero().reshape(-1).tolist() == [8]


def test_tiny_ssd_has_5444_anchors_at_256():
    model = TinySSD(num_classes=1).eval()
    with torch.no_grad():
        anchors, cls_preds, bbox_preds = model(torch.zeros(2, 3, 256, 256))
    assert anchors.shape == (1, 5444, 4)
    assert cls_preds.shape == (2, 5444, 2) and bbox_preds.shape == (2, 5444 * 4)


def test_detection_loss_falls_on_one_batch():
    torch.manual_seed(0)
    data = CompositeDetectionData(
        root="unused", source="random", num_train=8, num_val=4, size=64, batch_size=8
    )
    data.setup(torch.device("cpu"))
    batch = next(iter(data.train_loader()))
    model, task = TinySSD(num_classes=1), DetectionTask()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    losses = []
    for _ in range(10):
        loss, stats, n = task.step(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2
    metrics = task.compute({k: v.item() for k, v in stats.items()}, n)
    assert 0 <= metrics["class_err"] < 1 and metrics["bbox_mae"] > 0


# ---------------------------------------------------------------------------- data
def write_banana(root, split, rows, sizes):
    folder = root / "banana-detection" / split
    (folder / "images").mkdir(parents=True)
    for name, (h, w) in sizes.items():
        pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / "images" / name)
    lines = ["img_name,label,xmin,ymin,xmax,ymax", *(",".join(map(str, r)) for r in rows)]
    (folder / "label.csv").write_text("\n".join(lines) + "\n")


def test_banana_layout_is_read(tmp_path):
    sizes = {"0.png": (32, 32), "1.png": (32, 32)}
    write_banana(tmp_path, "bananas_train", [("0.png", 0, 8, 4, 24, 16), ("1.png", 0, 0, 0, 32, 32),
                                              ("1.png", 0, 2, 2, 6, 6)], sizes)  # fmt: skip
    write_banana(tmp_path, "bananas_val", [("0.png", 0, 16, 16, 32, 32)], {"0.png": (32, 32)})
    data = BananaData(root=tmp_path, batch_size=2, download=False)
    assert data.x_train.shape == (2, 3, 32, 32) and data.x_train.dtype == torch.uint8
    assert data.y_train.shape == (2, 2, 5) and data.y_val.shape == (1, 2, 5)  # padded to the most objects
    assert data.y_train[0].tolist() == [[0, 0.25, 0.125, 0.75, 0.5], [-1, -1, -1, -1, -1]]
    data.setup(torch.device("cpu"))
    x, y = next(iter(data.val_loader()))
    assert x.dtype == torch.float32 and x.max() <= 1 and y.shape == (1, 2, 5)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([("0.png", 0, 8, 4, 24, 16), ("9.png", 0, 1, 1, 5, 5)], "label.csv:3: image 9.png not found"),
        ([("0.png", 0, 8, 4, 40, 16)], "label.csv:2: box (8, 4, 40, 16) of 0.png is not inside its 32x32"),
        ([("0.png", 0, 8, 4, 4, 16)], "is not inside"),
    ],
)
def test_banana_errors_are_one_line(tmp_path, rows, message):
    write_banana(tmp_path, "bananas_train", rows, {"0.png": (32, 32)})
    with pytest.raises(DlrunError, match=None) as err:
        BananaData(root=tmp_path, download=False)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([("0.png", 0, 8, 4, 24, 16), ("9.png", 0, 1, 1, 5, 5)], "label.csv:3: image 9.png not found"),
        ([("0.png", 0, 8, 4, 40, 16)], "label.csv:2: box (8, 4, 40, 16) of 0.png is not inside its 32x32"),
    ],
)
def test_dl_run_prints_one_line_for_a_bad_label_file(tmp_path, rows, message):
    write_banana(tmp_path, "bananas_train", rows, {"0.png": (32, 32)})
    args = ["experiment=d2l/ssd_banana", f"paths.data_dir={tmp_path}", "data.download=false", "logger=none"]
    proc = run_cli(args, tmp_path, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in proc.stderr


def test_missing_banana_folder_names_it(tmp_path):
    with pytest.raises(DlrunError, match="banana-detection not found; set data.download=true"):
        BananaData(root=tmp_path, download=False)


def test_composites_are_reproducible_with_exact_boxes():
    a = CompositeDetectionData(root="unused", source="random", num_train=6, num_val=2, size=64, max_objects=3)
    b = CompositeDetectionData(root="unused", source="random", num_train=6, num_val=2, size=64, max_objects=3)
    c = CompositeDetectionData(root="unused", source="random", num_train=6, num_val=2, size=64, seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape == (6, 3, 64, 64) and a.y_train.shape == (6, 3, 5)
    real = a.y_train[a.y_train[..., 0] >= 0]
    assert len(real) >= 6 and (real[:, 0] == 0).all()
    assert (real[:, 1:] >= 0).all() and (real[:, 1:] <= 1).all()
    assert (real[:, 3] > real[:, 1]).all() and (real[:, 4] > real[:, 2]).all()


def test_composite_boxes_are_the_objects_extent():
    from dlrun.data.composites import make_scenes

    square = torch.zeros(1, 28, 28, dtype=torch.uint8)
    square[0, 7:21, 7:21] = 255  # half the object's side, centred
    gen = torch.Generator().manual_seed(0)
    _, labels, masks = make_scenes(square, torch.tensor([3]), 4, 40, 40, gen, min_scale=0.7, max_scale=0.7)
    for label, mask in zip(labels, masks, strict=True):
        ys, xs = mask.nonzero(as_tuple=True)
        expected = [0, xs.min() / 40, ys.min() / 40, (xs.max() + 1) / 40, (ys.max() + 1) / 40]
        assert torch.allclose(label[0], torch.tensor(expected))
        assert 0.3 < label[0, 3] - label[0, 1] < 0.4  # about half of 0.7


def test_fashion_mnist_objects_and_multiclass(tmp_path):
    for split in ("train", "t10k"):
        images = torch.randint(0, 256, (20, 28, 28))
        write_idx(tmp_path, "FashionMNIST", split, images, torch.arange(20) % 10)
    options = dict(num_train=10, num_val=4, size=64, multiclass=True)
    data = CompositeDetectionData(root=tmp_path, num_classes=10, **options)
    assert data.y_train[..., 0].max() > 0
    with pytest.raises(DlrunError, match="data.num_classes=1 but the objects have 10 class"):
        CompositeDetectionData(root=tmp_path, num_train=2, num_val=2, size=64, multiclass=True)


def test_ssd_runs_end_to_end_and_draws(tmp_path):
    run_dir = tmp_path / "run"
    args = ["experiment=d2l/ssd_fmnist", "data.source=random", "data.num_train=16", "data.num_val=8",
            "data.size=64", "data.batch_size=8", "trainer.max_epochs=1", "logger=none", "task.num_drawn=2",
            "task.draw_threshold=0", f"hydra.run.dir={run_dir}"]  # fmt: skip
    run_cli(args, cwd=tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["final"]["val/map50"] <= 1 and metrics["monitor"] == "val/map50"
    assert sorted(p.name for p in (run_dir / "detections").iterdir()) == ["000.png", "001.png"]
    run_cli(["experiment=d2l/ssd_fmnist", "data.source=random", "data.num_train=16", "data.num_val=8",
             "data.size=64", "mode=predict", f"ckpt_path={run_dir}", "task.num_drawn=1",
             f"hydra.run.dir={tmp_path / 'pred'}"], cwd=tmp_path)  # fmt: skip
    assert (tmp_path / "pred" / "detections" / "000.png").is_file()
