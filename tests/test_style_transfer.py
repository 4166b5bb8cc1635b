"""Neural style transfer: Gram matrices, the image as the only trained parameter, falling losses on random
VGG features (no weights offline), the written pictures, and the clear errors."""

import json

import pytest
import torch
from conftest import run_cli
from PIL import Image

from dlrun.data.style_images import StyleImages
from dlrun.errors import DlrunError
from dlrun.models.style import StyleTransferImage
from dlrun.tasks.style_transfer import gram, tv_loss


def test_gram_is_normalised_by_c_hw():
    x = torch.arange(12.0).reshape(1, 2, 2, 3)
    flat = x.reshape(2, 6)
    assert torch.allclose(gram(x), flat @ flat.T / 12)
    assert tv_loss(torch.ones(1, 3, 4, 4)) == 0


def test_only_the_image_trains(tmp_path):
    model = StyleTransferImage(height=16, width=24, weights=None)
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["image"]
    model.train()
    assert not model.features.training


def test_missing_vgg_weights_say_so(monkeypatch, tmp_path):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(DlrunError, match="model.weights=DEFAULT: torchvision's VGG-19 weights are not in"):
        StyleTransferImage(height=16, width=24, weights="DEFAULT")


def test_image_files_and_their_errors(tmp_path):
    for name in ("c.png", "s.png"):
        Image.new("RGB", (30, 20), (200, 10, 10)).save(tmp_path / name)
    data = StyleImages(str(tmp_path / "c.png"), str(tmp_path / "s.png"), height=10, width=15)
    assert data.content.shape == (1, 3, 10, 15)
    assert torch.allclose(
        data.postprocess(data.content)[0, :, 0, 0], torch.tensor([200, 10, 10]) / 255, atol=0.01
    )
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(DlrunError, match="cannot read image .*bad.png"):
        StyleImages(str(tmp_path / "bad.png"), str(tmp_path / "s.png"))
    with pytest.raises(DlrunError, match="give both"):
        StyleImages(str(tmp_path / "c.png"), None)


def test_style_transfer_runs_its_losses_fall_and_it_writes_the_image(tmp_path):
    run_dir = tmp_path / "run"
    args = ["experiment=d2l/style_transfer", "model.weights=null", "data.height=32", "data.width=48",
            "trainer.max_epochs=12", "task.save_every=6", "sched.scheduler.step_size=4", "logger=none",
            f"hydra.run.dir={run_dir}"]  # fmt: skip
    run_cli(args, cwd=tmp_path)
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    losses = [h["train/loss"] for h in history]
    assert losses[-1] < losses[0] / 2
    assert history[0]["train/content"] == pytest.approx(0, abs=1e-6)  # the image starts as the content image
    assert Image.open(run_dir / "stylized.png").size == (48, 32)
    assert sorted(p.name for p in (run_dir / "stylized").iterdir()) == ["epoch_0006.png", "epoch_0012.png"]
