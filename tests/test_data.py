import pytest
import torch
from conftest import write_idx

from dlrun.data.fake import FakeImageData
from dlrun.data.sampling import EpochBatchSampler
from dlrun.data.vision import TorchvisionImageData
from dlrun.errors import DlrunError


def test_sampler_visits_every_example_once_per_epoch_in_a_seeded_order():
    epoch0 = torch.cat(list(EpochBatchSampler(103, 10, shuffle=True, seed=3, epoch=0)))
    assert sorted(epoch0.tolist()) == list(range(103))
    again = torch.cat(list(EpochBatchSampler(103, 10, shuffle=True, seed=3, epoch=0)))
    epoch1 = torch.cat(list(EpochBatchSampler(103, 10, shuffle=True, seed=3, epoch=1)))
    assert torch.equal(epoch0, again) and not torch.equal(epoch0, epoch1)
    assert len(EpochBatchSampler(103, 10, shuffle=True)) == 11
    assert len(EpochBatchSampler(103, 10, shuffle=True, drop_last=True)) == 10


def test_sampler_skip_resumes_mid_epoch_and_ranks_partition():
    whole = list(EpochBatchSampler(50, 8, shuffle=True, seed=1, epoch=2))
    tail = list(EpochBatchSampler(50, 8, shuffle=True, seed=1, epoch=2, skip=3))
    assert all(torch.equal(a, b) for a, b in zip(whole[3:], tail, strict=True))
    ranks = [torch.cat(list(EpochBatchSampler(50, 8, True, seed=1, rank=r, world_size=2))) for r in (0, 1)]
    assert sorted(torch.cat(ranks).tolist()) == list(range(50))


def test_fake_data_is_deterministic_and_shaped_as_configured():
    a = FakeImageData(num_train=64, num_val=16, channels=3, num_classes=5, size=12, seed=7)
    b = FakeImageData(num_train=64, num_val=16, channels=3, num_classes=5, size=12, seed=7)
    c = FakeImageData(num_train=64, num_val=16, channels=3, num_classes=5, size=12, seed=8)
    assert a.x_train.shape == (64, 3, 12, 12) and a.x_train.dtype == torch.uint8
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.x_train, c.x_train)
    assert set(a.y_train.tolist()) <= set(range(5))


def test_batches_are_scaled_and_resized_on_the_device():
    data = FakeImageData(batch_size=16, num_train=40, num_val=8, size=10, resize=24)
    data.setup(torch.device("cpu"), seed=0)
    batches = list(data.train_loader(epoch=0))
    assert [len(y) for _, y in batches] == [16, 16, 8]
    x, y = batches[0]
    assert x.shape == (16, 1, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.long
    assert 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.parametrize("dataset", ["MNIST", "FashionMNIST"])
def test_mnist_format_datasets_load_from_idx_files(tmp_path, dataset):
    g = torch.Generator().manual_seed(0)
    train_x, train_y = (
        torch.randint(0, 256, (30, 28, 28), generator=g),
        torch.randint(0, 10, (30,), generator=g),
    )
    test_x, test_y = (
        torch.randint(0, 256, (12, 28, 28), generator=g),
        torch.randint(0, 10, (12,), generator=g),
    )
    write_idx(tmp_path, dataset, "train", train_x, train_y)
    write_idx(tmp_path, dataset, "t10k", test_x, test_y)
    data = TorchvisionImageData(
        dataset, tmp_path, batch_size=8, channels=1, num_classes=10, size=28, download=False
    )
    assert torch.equal(data.x_train[:, 0], train_x.to(torch.uint8)) and torch.equal(data.y_val, test_y)
    data.setup(torch.device("cpu"), seed=0)
    x, _ = next(iter(data.val_loader()))
    torch.testing.assert_close(x[0, 0], test_x[0].float() / 255)


def test_missing_dataset_names_folder_and_files(tmp_path):
    with pytest.raises(DlrunError) as err:
        TorchvisionImageData(
            "MNIST", tmp_path, batch_size=8, channels=1, num_classes=10, size=28, download=False
        )
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "t10k-labels-idx1-ubyte" in message
    assert "\n" not in message


def test_config_that_contradicts_the_files_is_reported(tmp_path):
    write_idx(tmp_path, "MNIST", "train", torch.zeros(4, 28, 28), torch.zeros(4))
    write_idx(tmp_path, "MNIST", "t10k", torch.zeros(4, 28, 28), torch.zeros(4))
    with pytest.raises(DlrunError, match="images are 1x28x28 but the config says data.channels=3"):
        TorchvisionImageData(
            "MNIST", tmp_path, batch_size=8, channels=3, num_classes=10, size=28, download=False
        )
