"""The first chapters' models: shapes, parameter counts of the book's architectures, initialisation."""

import pytest
import torch

from dlrun.errors import DlrunError
from dlrun.models.batchnorm import BatchNorm
from dlrun.models.lenet import LeNet, LeNetBN
from dlrun.models.mlp import MLP
from dlrun.models.softmax_regression import SoftmaxRegression

# Counts written out from the book's layers (weights + biases), 1 x 28 x 28 inputs, 10 classes.
BOOK_COUNTS = {
    "softmax": 784 * 10 + 10,
    "mlp": (784 * 256 + 256) + (256 * 10 + 10),
    "mlp_dropout": (784 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10),
    # Conv(1,6,5) Conv(6,16,5) Linear(16*5*5,120) Linear(120,84) Linear(84,10)
    "lenet": (6 * 25 + 6) + (16 * 6 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10),
    # no padding, so Linear(16*4*4,120); plus gamma and beta for 6, 16, 120, 84 features
    "lenet_bn": (6 * 25 + 6)
    + (16 * 6 * 25 + 16)
    + (256 * 120 + 120)
    + (120 * 84 + 84)
    + (84 * 10 + 10)
    + 2 * (6 + 16 + 120 + 84),
}


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, model",
    [
        ("softmax", SoftmaxRegression()),
        ("mlp", MLP()),
        ("mlp_dropout", MLP(hidden_sizes=[256, 256], dropout=[0.2, 0.5])),
        ("lenet", LeNet()),
        ("lenet_bn", LeNetBN(batchnorm="scratch")),
        ("lenet_bn", LeNetBN(batchnorm="torch")),
    ],
)
def test_parameter_counts_equal_the_books_architecture(name, model):
    assert count(model) == BOOK_COUNTS[name]
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_models_follow_channels_classes_and_size():
    for model in (SoftmaxRegression(3, 5, 32), MLP(3, 5, 32), LeNet(3, 5, 32), LeNetBN(3, 5, 32)):
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(DlrunError, match="too small"):
        LeNet(image_size=4)


def test_book_initialisation():
    torch.manual_seed(0)
    softmax = SoftmaxRegression()
    assert softmax[1].weight.std().item() == pytest.approx(0.01, rel=0.05)
    lenet = LeNet()
    fan_in, fan_out = 400, 120
    bound = (6 / (fan_in + fan_out)) ** 0.5  # Xavier-uniform
    w = lenet[7].weight  # Linear(400, 120)
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.9 * bound


def test_dropout_and_activation_options():
    mlp = MLP(hidden_sizes=[8, 8], dropout=[0.2, 0.5], activation="sigmoid")
    kinds = [type(m).__name__ for m in mlp]
    assert kinds == ["Flatten", "Linear", "Sigmoid", "Dropout", "Linear", "Sigmoid", "Dropout", "Linear"]
    assert [m.p for m in mlp if isinstance(m, torch.nn.Dropout)] == [0.2, 0.5]
    with pytest.raises(DlrunError, match="one per hidden layer"):
        MLP(hidden_sizes=[8, 8], dropout=[0.5])
    lenet = LeNet(activation="relu", pooling="max")
    assert any(isinstance(m, torch.nn.MaxPool2d) for m in lenet)
    with pytest.raises(DlrunError, match="choose one of"):
        LeNet(activation="swish")


@pytest.mark.parametrize("shape", [(16, 6), (16, 6, 5, 5)])
def test_scratch_batchnorm_matches_torch_in_training_and_tracks_moving_stats(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape) * 3 + 1
    ours = BatchNorm(6, num_dims=len(shape))
    theirs = torch.nn.BatchNorm1d(6) if len(shape) == 2 else torch.nn.BatchNorm2d(6)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)
    dims = (0,) if len(shape) == 2 else (0, 2, 3)
    torch.testing.assert_close(ours.moving_mean.flatten(), 0.1 * x.mean(dim=dims))  # 0.9*0 + 0.1*mean
    ours.eval()
    expected = (x - ours.moving_mean) / torch.sqrt(ours.moving_var + 1e-5)
    torch.testing.assert_close(ours(x), expected)
