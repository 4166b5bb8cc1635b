"""init_from / init_skip: a fresh run from another run's weights; the class subsets fine-tuning trains on."""

import json

import pytest
import torch
from conftest import run_cli, write_idx

from dlrun import init_from
from dlrun.data.vision import TorchvisionImageData
from dlrun.engine.checkpoint import BEST, LAST
from dlrun.errors import DlrunError
from dlrun.models.lenet import LeNet


def lenet(num_classes, seed):
    torch.manual_seed(seed)
    return LeNet(num_classes=num_classes, activation="relu", pooling="max")


def save(model, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return path


def same(a, b):
    return all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_matching_weights_load_in_full(tmp_path):
    source, target = lenet(5, 0), lenet(5, 1)
    loaded = init_from.load_into(target, save(source, tmp_path / "a.ckpt"))
    assert same(source, target) and loaded["skipped"] == [] and len(loaded["loaded"]) == 10


def test_a_new_head_is_refused_unless_named_in_init_skip(tmp_path):
    path = save(lenet(5, 0), tmp_path / "a.ckpt")
    target = lenet(3, 1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(DlrunError) as err:
        init_from.load_into(target, path)
    message = str(err.value)
    assert "11.weight has shape (5, 84) there, (3, 84) here" in message and "init_skip=[11]" in message
    assert "\n" not in message
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing half-loaded

    loaded = init_from.load_into(target, path, skip=[11])  # Hydra parses init_skip=[11] as an int
    assert loaded["skipped"] == ["11.weight", "11.bias"]
    source = lenet(5, 0).state_dict()
    for key, value in target.state_dict().items():
        expected = before[key] if key.startswith("11.") else source[key]
        assert torch.equal(value, expected), key


def test_init_skip_may_reset_a_fitting_layer_and_rejects_a_typo(tmp_path):
    source, target = lenet(5, 0), lenet(5, 1)
    fresh_head = target[11].weight.clone()
    init_from.load_into(target, save(source, tmp_path / "a.ckpt"), skip=["11"])
    assert torch.equal(target[11].weight, fresh_head) and torch.equal(target[0].weight, source[0].weight)
    with pytest.raises(DlrunError, match=r"init_skip: fc names no weight .* its layers are: 0, 3, 7, 9, 11"):
        init_from.load_into(target, tmp_path / "a.ckpt", skip=["fc"])


def test_a_run_dir_gives_its_best_then_its_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    save(lenet(5, 0), run / LAST)
    assert init_from.resolve(run) == run / LAST
    save(lenet(5, 0), run / BEST)
    assert init_from.resolve(run) == run / BEST
    with pytest.raises(DlrunError, match=f"no {BEST} or {LAST} in {tmp_path}"):
        init_from.resolve(tmp_path)
    with pytest.raises(DlrunError, match=f"{tmp_path / 'gone'} does not exist"):
        init_from.resolve(tmp_path / "gone")


def errors(proc):
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def test_cli_fine_tunes_a_run_on_other_classes(tmp_path):
    smoke = ["experiment=smoke", "logger=none", "trainer.max_epochs=1", "data.num_train=64"]
    run_cli([*smoke, "name=pre"], tmp_path)
    pretrained = next((tmp_path / "outputs" / "pre").iterdir())
    new_head = [*smoke, "name=ft", f"init_from={pretrained}", "data.num_classes=4"]

    (line,) = errors(run_cli(new_head, tmp_path, check=False))
    assert "11.weight has shape (10, 84) there, (4, 84) here" in line and "init_skip=[11]" in line

    proc = run_cli([*new_head, "init_skip=[11]"], tmp_path)
    loaded = f"init_from {pretrained / BEST}: loaded 8 of 10 tensors; fresh init (init_skip): "
    assert loaded + "11.weight, 11.bias" in proc.stdout + proc.stderr
    # the refused run above left a run dir holding only its log
    finetuned = next(d for d in (tmp_path / "outputs" / "ft").iterdir() if (d / "metrics.json").exists())
    assert json.loads((finetuned / "metrics.json").read_text())["epochs"] == 1  # a fresh run, not a resume
    weights = torch.load(finetuned / LAST, weights_only=True)["model"]
    assert weights["11.weight"].shape == (4, 84)


def test_cli_init_from_nothing_is_one_line_before_the_data_loads(tmp_path):
    proc = run_cli(["experiment=smoke", f"init_from={tmp_path / 'nope'}"], tmp_path, check=False)
    (line,) = errors(proc)
    assert f"init_from={tmp_path / 'nope'}: {tmp_path / 'nope'} does not exist" in line


def test_experiment_without_the_pretrained_run_says_how_to_give_it(tmp_path):
    (line,) = errors(run_cli(["experiment=d2l/finetune_fmnist"], tmp_path, check=False))
    assert line == (
        "error: init_from=<run dir of d2l/finetune_fmnist_pretrain>: this run starts from another one; "
        "give its path, init_from=DIR"
    )


@pytest.fixture
def tiny_fmnist(tmp_path):
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 60), ("t10k", 30)):
        labels = torch.arange(n) % 10
        write_idx(tmp_path, "FashionMNIST", split, torch.randint(0, 256, (n, 28, 28), generator=g), labels)
    return tmp_path


def test_classes_are_kept_and_relabelled_and_the_training_split_cut_per_class(tiny_fmnist):
    data = TorchvisionImageData(
        "FashionMNIST", tiny_fmnist, 8, 1, 2, 28, download=False, classes=[7, 5], train_per_class=4
    )
    assert data.y_train.tolist() == [0] * 4 + [1] * 4
    assert data.y_val.tolist() == [0] * 3 + [1] * 3  # validation: every image of those classes
    full = TorchvisionImageData("FashionMNIST", tiny_fmnist, 8, 1, 10, 28, download=False)
    sevens = full.x_train[full.y_train == 7][:4]
    assert torch.equal(data.x_train[:4], sevens)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"classes": [5, 6], "num_classes": 3}, "data.classes has 2 classes but data.num_classes=3"),
        ({"classes": [5, 5], "num_classes": 2}, "names a class twice"),
        ({"classes": [5], "num_classes": 1, "train_per_class": 7}, "only 6 training images of class 5"),
    ],
)
def test_bad_class_selections_are_one_line(tiny_fmnist, options, message):
    options = {"num_classes": 10} | options
    with pytest.raises(DlrunError, match=message):
        TorchvisionImageData("FashionMNIST", tiny_fmnist, 8, 1, size=28, download=False, **options)
