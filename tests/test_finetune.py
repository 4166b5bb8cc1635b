"""Fine-tuning (book 13.2): a new head, the head at 10x the lr, a frozen body, cached pretrained weights."""

import functools
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from dlrun.errors import DlrunError
from dlrun.models.resnet import ResNet
from dlrun.models.torchvision_model import TorchvisionModel, weights_file
from dlrun.tasks.classification import ClassificationTask

SGD = functools.partial(torch.optim.SGD, lr=0.1, weight_decay=0.001)


def test_head_learns_at_a_multiple_of_the_lr():
    model = TorchvisionModel("resnet18", num_classes=2, head_init="xavier")
    assert model.net.fc.out_features == 2
    opts, _ = ClassificationTask(head_lr_mult=10).configure_optimizers(model, SGD)
    body, head = opts["default"].param_groups
    assert body["lr"] == 0.1 and head["lr"] == pytest.approx(1.0) and head["weight_decay"] == 0.001
    assert {id(p) for p in head["params"]} == {id(model.net.fc.weight), id(model.net.fc.bias)}
    assert len(body["params"]) + 2 == len(list(model.parameters()))
    # models without head_parameters(): their last nn.Linear
    resnet = ResNet(in_channels=1, num_classes=3, image_size=28)
    opts, _ = ClassificationTask(head_lr_mult=10).configure_optimizers(resnet, SGD)
    assert {id(p) for p in opts["default"].param_groups[1]["params"]} == {
        id(p) for p in resnet[-1].parameters()
    }
    opts, _ = ClassificationTask().configure_optimizers(resnet, SGD)
    assert len(opts["default"].param_groups) == 1


def test_freeze_trains_the_head_alone():
    model = TorchvisionModel("resnet18", num_classes=2, freeze=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"net.fc.weight", "net.fc.bias"}
    before = model.net.conv1.weight.clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    nn.functional.cross_entropy(model(torch.rand(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
    opt.step()
    assert torch.equal(model.net.conv1.weight, before)


def test_sum_reduction_scales_the_gradient_not_the_logged_loss():
    x, y = torch.rand(4, 3), torch.tensor([0, 1, 2, 0])
    model = nn.Linear(3, 3)
    mean_loss, stats, n = ClassificationTask().step(model, (x, y))
    sum_loss, stats_sum, _ = ClassificationTask(loss_reduction="sum").step(model, (x, y))
    assert torch.allclose(sum_loss, mean_loss * n) and torch.equal(stats["loss"], stats_sum["loss"])


def test_pretrained_weights_come_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = weights_file("resnet18", "DEFAULT")
    assert path == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(DlrunError, match=r"not cached .*resnet18-f37072fd.pth.*model.weights=null"):
        TorchvisionModel("resnet18", num_classes=2, weights="DEFAULT")
    reference = torchvision.models.resnet18()  # stands in for the ImageNet weights
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), path)
    model = TorchvisionModel("resnet18", num_classes=2, weights="DEFAULT", head_init="xavier")
    assert torch.equal(model.net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model.net.fc.weight.shape == (2, 512)
    with pytest.raises(DlrunError, match="unknown for resnet18"):
        TorchvisionModel("resnet18", weights="NOPE")
