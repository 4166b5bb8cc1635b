"""The augment group: batched v2 transforms per example on whole batches, seeded by (seed, epoch, batch)."""

import pytest
import torch
from torch.nn import functional as F
from torchvision.transforms import v2

from dlrun.data.augment import Augment, mix
from dlrun.data.fake import FakeImageData


def images(n=32, c=3, size=8, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_batched_flip_flips_some_examples_and_is_seeded():
    x = images(64)
    aug = Augment(train=[v2.RandomHorizontalFlip()])
    out = aug.batch(x, train=True, key=7)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54
    assert torch.equal(out, aug.batch(x, train=True, key=7))
    assert not torch.equal(out, aug.batch(x, train=True, key=8))
    assert torch.equal(aug.batch(x, train=False, key=7), x)  # held-out batches: no train pipeline


def test_batched_random_crop_is_a_window_of_the_padded_image():
    x = images(16, size=8)
    out = Augment(train=[v2.RandomCrop(8, padding=2)]).batch(x, train=True, key=3)
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = set()
    for o, p in zip(out, padded, strict=True):
        hits = [(i, j) for i in range(5) for j in range(5) if torch.equal(p[:, i : i + 8, j : j + 8], o)]
        assert hits, "every crop is a window of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 3


def test_batched_resized_crop_of_the_whole_image_is_a_resize():
    x = images(4, size=16)
    same = Augment(train=[v2.RandomResizedCrop(16, scale=(1, 1), ratio=(1, 1))]).batch(x, True, 0)
    assert torch.allclose(same, x, atol=1e-6)
    up = Augment(train=[v2.RandomResizedCrop(24, scale=(1, 1), ratio=(1, 1))]).batch(x, True, 0)
    assert torch.allclose(up, F.interpolate(x, size=24, mode="bilinear", align_corners=False), atol=1e-5)


def test_batched_resized_crop_boxes_follow_scale_and_ratio():
    x = torch.arange(64 * 64, dtype=torch.float).reshape(1, 1, 64, 64).repeat(200, 1, 1, 1)
    out = Augment(train=[v2.RandomResizedCrop(8, scale=(0.25, 0.25), ratio=(1, 1))]).batch(x, True, 5)
    # a 32x32 box: the corner values of the 8x8 output span about 32 - 4 pixels in each direction
    spread_rows = (out[:, 0, -1, 0] - out[:, 0, 0, 0]) / 64
    assert torch.allclose(spread_rows, torch.full_like(spread_rows, 28.0), atol=0.5)
    assert len(set(out[:, 0, 0, 0].tolist())) > 50  # placed at random


def test_color_jitter_and_normalize_on_batches():
    x = images(32)
    aug = Augment(
        train=[v2.ColorJitter(0.4, 0.4, 0.4)],
        common=[v2.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])],
    )
    out = aug.batch(x, train=True, key=1)
    assert out.shape == x.shape and not torch.allclose(out, (x - 0.5) / 0.25)
    assert torch.allclose(aug.batch(x, train=False, key=1), (x - 0.5) / 0.25)


def test_test_pipeline_runs_on_held_out_batches_only():
    x = images(4, size=16)
    aug = Augment(train=[v2.RandomHorizontalFlip(p=0.0)], test=[v2.CenterCrop(8)])
    assert aug.batch(x, train=False, key=0).shape[-1] == 8
    assert aug.batch(x, train=True, key=0).shape[-1] == 16


def test_transforms_without_a_batched_version_run_per_example_seeded():
    x = images(8)
    aug = Augment(train=[v2.RandomRotation(30)])
    state = torch.get_rng_state()
    a, b = aug.batch(x, True, 11), aug.batch(x, True, 11)
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert not torch.equal(a, aug.batch(x, True, 12))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone


def test_sample_is_seeded_by_its_key_and_leaves_the_global_rng_alone():
    image = images(1)[0]
    aug = Augment(train=[v2.RandomResizedCrop(6), v2.RandomHorizontalFlip()])
    state = torch.get_rng_state()
    assert torch.equal(aug.sample(image, True, 5), aug.sample(image, True, 5))
    assert not torch.equal(aug.sample(image, True, 5), aug.sample(image, True, 6))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("skip", [0, 3])
def test_in_memory_augmented_batches_depend_on_seed_epoch_and_batch_only(skip):
    aug = Augment(train=[v2.RandomHorizontalFlip(), v2.RandomCrop(8, padding=2)])
    data = FakeImageData(batch_size=16, num_train=128, num_val=32, channels=3, size=8, augment=aug)
    data.setup(torch.device("cpu"), seed=4)
    full = list(data.train_loader(epoch=2))
    torch.manual_seed(123)  # the global RNG's state does not matter
    resumed = list(data.train_loader(epoch=2, skip=skip))
    assert len(resumed) == len(full) - skip
    for (xa, ya), (xb, yb) in zip(full[skip:], resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = next(iter(data.train_loader(epoch=3)))[0]
    assert not torch.equal(other, full[0][0])
    plain = FakeImageData(batch_size=16, num_train=128, num_val=32, channels=3, size=8)
    plain.setup(torch.device("cpu"), seed=4)
    assert torch.equal(next(iter(plain.val_loader()))[0], next(iter(data.val_loader()))[0])


def test_mix_separates_its_parts():
    assert len({mix(1, e, b) for e in range(5) for b in range(50)}) == 250
    assert mix(1, 2, 3) != mix(1, 3, 2)
