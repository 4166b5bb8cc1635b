"""The book's modern CNNs (chapter 8) and the torchvision adapter: architectures, configs, CLI runs."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from hydra.utils import instantiate

import dlrun.resolvers  # noqa: F401  (${coalesce:})
from dlrun.errors import DlrunError
from dlrun.models.alexnet import AlexNet
from dlrun.models.densenet import DenseNet
from dlrun.models.googlenet import GoogLeNet
from dlrun.models.nin import NiN
from dlrun.models.resnet import ResNet
from dlrun.models.torchvision_model import TorchvisionModel
from dlrun.models.vgg import VGG
from dlrun.run import model_node

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# conf/model/<name>.yaml -> (class, constructor options, the book's input size, the smallest it accepts or
# None for any size)
MODELS = {
    "alexnet": (AlexNet, {}, 224, 65),
    "vgg11": (VGG, {}, 224, 32),
    "vgg11_quarter": (VGG, {"width_divisor": 4}, 224, 32),
    "nin": (NiN, {}, 224, 67),
    "googlenet": (GoogLeNet, {}, 96, None),
    "resnet18": (ResNet, {}, 96, None),
    "resnet34": (ResNet, {"stages": (3, 4, 6, 3)}, 96, None),
    "densenet": (DenseNet, {}, 96, 29),
}

# Parameters at 1 input channel and 10 classes, counted once (sum of p.numel()) on the book's own PyTorch code
# (d2l v2, chapter 8: its nn.Sequential, vgg_block/vgg, nin_block, Inception, Residual/resnet_block,
# conv_block/DenseBlock/transition_block, typed from the book in a throwaway script independent of dlrun).
# vgg11_quarter is the book's small_conv_arch (ratio 4); resnet34 the book's resnet_block with (3, 4, 6, 3).
BOOK_PARAMS = {
    "alexnet": 46_764_746,
    "vgg11": 128_806_154,
    "vgg11_quarter": 43_093_322,
    "nin": 1_992_166,
    "googlenet": 5_977_530,
    "resnet18": 11_178_378,
    "resnet34": 21_290_250,
    "densenet": 758_226,
}


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def logits(model: torch.nn.Module, channels: int, size: int) -> torch.Tensor:
    return model(torch.rand(2, channels, size, size))


@pytest.mark.parametrize("name", MODELS)
def test_matches_the_book_at_its_input_size(name):
    cls, options, size, _ = MODELS[name]
    model = cls(in_channels=1, num_classes=10, image_size=size, **options)
    assert num_params(model) == BOOK_PARAMS[name]
    assert logits(model, 1, size).shape == (2, 10)


@pytest.mark.parametrize("name", MODELS)
def test_smallest_input_works_and_smaller_is_a_clear_error(name):
    cls, options, _, smallest = MODELS[name]
    size = smallest or 64
    assert logits(cls(in_channels=1, num_classes=10, image_size=size, **options), 1, size).shape == (2, 10)
    if smallest:
        with pytest.raises(DlrunError, match="too small"):
            cls(in_channels=1, num_classes=10, image_size=smallest - 1, **options)


@pytest.mark.parametrize("name", ["googlenet", "resnet18", "densenet"])
def test_rgb_hundred_classes(name):
    cls, options, _, _ = MODELS[name]
    assert logits(cls(in_channels=3, num_classes=100, image_size=64, **options), 3, 64).shape == (2, 100)


@pytest.fixture
def compose_model(compose_cfg):
    """compose_model(*overrides) -> (the composed config, the model dl-run would build from it)."""

    def build(*overrides: str):
        cfg = compose_cfg(list(overrides))
        return cfg, instantiate(model_node(cfg))

    return build


FAKE = ("data=fake", "data.size=32", "data.num_train=16", "data.num_val=8")


@pytest.mark.parametrize("name", MODELS)
def test_model_config_builds_the_book_model(name, compose_model):
    cfg, model = compose_model(f"model={name}", *FAKE)
    assert type(model) is MODELS[name][0]
    assert cfg.data.resize == cfg.model.input_size == MODELS[name][2]
    assert num_params(model) == BOOK_PARAMS[name]


# experiment=d2l/<name> -> (model, lr, batch size): the book's v2 settings, 10 epochs on Fashion-MNIST
BOOK_SETTINGS = {
    "alexnet": ("alexnet", 0.01, 128),
    "vgg": ("vgg11_quarter", 0.05, 128),
    "nin": ("nin", 0.1, 128),
    "googlenet": ("googlenet", 0.1, 128),
    "resnet18": ("resnet18", 0.05, 256),
    "densenet": ("densenet", 0.1, 256),
}


@pytest.mark.parametrize("name", BOOK_SETTINGS)
def test_book_experiment(name, compose_model):
    model_name, lr, batch_size = BOOK_SETTINGS[name]
    cfg, model = compose_model(f"experiment=d2l/{name}")
    assert (cfg.name, cfg.optim.lr, cfg.data.batch_size) == (f"d2l_{name}", lr, batch_size)
    assert cfg.trainer.max_epochs == 10
    assert cfg.data.dataset == "FashionMNIST" and cfg.data.resize == MODELS[model_name][2]
    assert num_params(model) == BOOK_PARAMS[model_name]


def test_torchvision_config(compose_model):
    _, model = compose_model("model=torchvision", "model.name=resnet18", *FAKE, "data.resize=32")
    assert isinstance(model, TorchvisionModel)
    assert logits(model, 1, 32).shape == (2, 10)


def test_torchvision_adapter_changes_channels_and_classes():
    model = TorchvisionModel("resnet18", in_channels=1, num_classes=10, image_size=64)
    assert model.net.conv1.in_channels == 1
    assert logits(model, 1, 64).shape == (2, 10)


def test_torchvision_unknown_names_list_the_valid_ones():
    with pytest.raises(DlrunError, match="resnet19") as err:
        TorchvisionModel("resnet19", in_channels=1, num_classes=10)
    assert all(name in str(err.value) for name in ("alexnet", "resnet18", "resnet50", "vit_b_16"))
    with pytest.raises(DlrunError, match="IMAGENET1K_V1"):
        TorchvisionModel("resnet18", in_channels=1, num_classes=10, weights="NOT_A_WEIGHTS_NAME")


def test_torchvision_pretrained_stem_is_summed_over_rgb(monkeypatch):
    pretrained = torchvision.models.resnet18()  # stands in for downloaded weights (no network in tests)
    monkeypatch.setattr(torchvision.models, "get_model", lambda name, **kwargs: pretrained)
    rgb = pretrained.conv1.weight.detach().clone()
    model = TorchvisionModel("resnet18", in_channels=1, num_classes=10, weights="DEFAULT")
    torch.testing.assert_close(model.net.conv1.weight, rgb.sum(dim=1, keepdim=True))
    assert model.net.fc.out_features == 10
    with pytest.raises(DlrunError, match="overwrite the pretrained weights"):
        TorchvisionModel("resnet18", in_channels=1, num_classes=10, weights="DEFAULT", init="xavier")


# One training and one validation batch through `python -m dlrun`, on small images (AlexNet and NiN need 65
# and 67 px at least).
CLI_SIZES = {
    "alexnet": 65,
    "vgg11": 32,
    "vgg11_quarter": 32,
    "nin": 67,
    "googlenet": 32,
    "resnet18": 32,
    "resnet34": 32,
    "densenet": 32,
    "torchvision": 32,
}


@pytest.mark.parametrize("name", CLI_SIZES)
def test_fast_dev_run(name, tmp_path):
    args = [
        "experiment=smoke",
        f"model={name}",
        "trainer.fast_dev_run=true",
        "data.batch_size=8",
        f"data.resize={CLI_SIZES[name]}",
        f"hydra.run.dir={tmp_path / name}",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "dlrun", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
