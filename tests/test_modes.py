"""mode=check, test, lr_find and export on tiny models and data=fake."""

import json

import pytest
import torch
from conftest import run_cli
from torch import nn

from dlrun.errors import DlrunError
from dlrun.run import run

SMOKE = ["experiment=smoke", "logger=none", "trainer.progress_bar=false"]


def files_under(root, pattern):
    return sorted(p.relative_to(root) for p in root.rglob(pattern))


# ------------------------------------------------------------------ check
def test_check_runs_a_step_and_summarises_without_writing_a_checkpoint(compose_cfg, tmp_path, capsys):
    """softmax regression on 28×28: Linear(784, 10) is 2·784·10 FLOPs and 7,850 parameters per example."""
    run(compose_cfg([*SMOKE, "model=softmax_regression", "mode=check"]))
    out = capsys.readouterr().out
    assert "7,850 parameters (7,850 trainable)" in out
    assert "15.68 k FLOPs per example" in out
    assert "B×784" in out and "B×10" in out  # the Flatten and Linear output shapes
    assert "check passed" in out and "train/loss" in out and "val/loss" in out
    assert "activations (batch 64)" in out
    summary = (tmp_path / "run" / "model_summary.txt").read_text()
    assert "7,850" in summary
    assert files_under(tmp_path, "*.ckpt") == [] and files_under(tmp_path, "metrics.json") == []


def test_check_resnet18_shows_the_books_parameter_count(tmp_path):
    proc = run_cli(
        ["experiment=d2l/resnet18", "data=fake", "data.num_train=32", "data.num_val=16", "mode=check"],
        tmp_path,
    )
    assert "11,178,378 parameters" in proc.stdout
    assert "check passed" in proc.stdout
    assert files_under(tmp_path, "*.ckpt") == []


# ------------------------------------------------------------------ test
@pytest.fixture
def smoke_ckpt(compose_cfg, tmp_path):
    """A one-epoch smoke run: (its run dir, its metrics.json)."""
    run(compose_cfg([*SMOKE, "trainer.max_epochs=1"]))
    run_dir = tmp_path / "run"
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_test_mode_evaluates_the_checkpoint_on_the_held_out_split(smoke_ckpt, compose_cfg, tmp_path):
    run_dir, metrics = smoke_ckpt
    out = tmp_path / "test_run"
    cfg = compose_cfg([*SMOKE, "mode=test", f"ckpt_path={run_dir}"])
    cfg.paths.output_dir = str(out)
    run(cfg)
    result = json.loads((out / "test_metrics.json").read_text())
    assert result["examples"] == 128  # smoke's num_val
    assert result["checkpoints"] == [str(run_dir / "best.ckpt")]
    assert result["metrics"]["test/acc"] == pytest.approx(metrics["best"]["val/acc"], abs=1e-6)
    assert result["metrics"]["test/loss"] == pytest.approx(metrics["best"]["val/loss"], rel=1e-5)


def test_test_mode_needs_a_checkpoint(compose_cfg):
    with pytest.raises(DlrunError, match="mode=test needs ckpt_path="):
        run(compose_cfg([*SMOKE, "mode=test"]))


def test_unknown_mode_lists_the_modes(compose_cfg):
    with pytest.raises(DlrunError, match="check, test, lr_find, export"):
        run(compose_cfg([*SMOKE, "mode=nope"]))


# ------------------------------------------------------------------ lr_find
def tiny_setup():
    from functools import partial

    from dlrun.data.fake import FakeImageData
    from dlrun.engine.device import Precision
    from dlrun.models.mlp import MLP
    from dlrun.tasks.classification import ClassificationTask

    torch.manual_seed(0)
    data = FakeImageData(batch_size=32, num_train=256, num_val=64, size=8)
    data.setup(torch.device("cpu"), 0)
    model = MLP(image_size=8, hidden_sizes=[32], dropout=[0.0], init="xavier")
    precision = Precision("32", torch.device("cpu"))
    return model, ClassificationTask(), data, partial(torch.optim.SGD, momentum=0.9), precision


def test_lr_range_test_grows_the_lr_stops_on_divergence_and_leaves_model_optimizer_and_rng_alone():
    from dlrun.modes.lr_find import lr_range_test

    model, task, data, optimizer, precision = tiny_setup()
    # buffers too (running stats must not move), and dropout draws from the global RNG
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Dropout(0.1), model)
    configured = optimizer(model.parameters(), lr=0.1)
    task.training_step(model, next(iter(data.train_loader(epoch=1))))[0].backward()
    configured.step()  # momentum buffers in the configured optimizer's state
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = {i: s["momentum_buffer"].clone() for i, s in enumerate(configured.state.values())}
    rng = torch.get_rng_state()
    result = lr_range_test(model, task, data, optimizer, precision, num_steps=60, min_lr=1e-4, max_lr=1e4)
    ratio = 1e8 ** (1 / 59)  # geometric steps from 1e-4 to 1e4 over 60 steps
    assert all(b == pytest.approx(a * ratio) for a, b in zip(result.lrs[:-1], result.lrs[1:], strict=True))
    assert len(result.lrs) < 60 and ("diverged" in result.stopped or "became" in result.stopped)
    assert result.low <= result.suggestion <= result.high < result.lrs[-1]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training  # the copy was put in train mode, not the model
    after = {i: s["momentum_buffer"] for i, s in enumerate(configured.state.values())}
    assert opt_before.keys() == after.keys() and all(torch.equal(opt_before[i], after[i]) for i in after)
    assert configured.param_groups[0]["lr"] == 0.1
    assert torch.equal(torch.get_rng_state(), rng)


def test_classification_chance_loss_is_ln_classes_and_moves_nothing():
    import math

    from dlrun.tasks.classification import ClassificationTask

    model, task, data, _, _ = tiny_setup()
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), model).train()
    batch = next(iter(data.train_loader(epoch=1)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert task.chance_loss(model, batch) == pytest.approx(math.log(10))
    summed = ClassificationTask(loss_reduction="sum")
    assert summed.chance_loss(model, batch) == pytest.approx(32 * math.log(10))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_range_test_that_never_gets_below_chance_suggests_nothing():
    """lrs too small to move the model: the loss stays at its initial level, above ln(10); a curve that only
    shows noise on a plateau must not yield an lr. The same model over a wide range does learn."""
    import math

    from dlrun.modes.lr_find import learned, lr_range_test

    model, task, data, optimizer, precision = tiny_setup()
    stuck = lr_range_test(model, task, data, optimizer, precision, num_steps=40, min_lr=1e-9, max_lr=1e-7)
    assert stuck.chance == pytest.approx(math.log(10)) and min(stuck.losses) > stuck.chance
    assert not learned(stuck) and stuck.suggestion is None and stuck.low is None
    moving = lr_range_test(model, task, data, optimizer, precision, num_steps=40, min_lr=1e-3, max_lr=10)
    assert learned(moving) and moving.suggestion is not None


def test_lr_find_mode_says_to_run_longer_when_the_loss_never_leaves_chance(compose_cfg, tmp_path, caplog):
    lr_find = ["+lr_find.num_steps=12", "+lr_find.min_lr=1e-9", "+lr_find.max_lr=1e-8"]
    cfg = compose_cfg([*SMOKE, "mode=lr_find", *lr_find])
    with caplog.at_level("WARNING", logger="dlrun"):
        run(cfg)
    assert "never got below chance" in caplog.text and "++lr_find.num_steps=48 or more" in caplog.text
    assert json.loads((tmp_path / "run" / "lr_find.json").read_text())["suggestion"] is None


class _FullBatch:
    """One batch, every epoch: full-batch gradient descent."""

    def __init__(self, batch):
        self.batch = batch

    def train_loader(self, epoch):
        return [self.batch]


class _MSE:
    automatic_optimization = True

    def configure_optimizers(self, model, optimizer, scheduler):
        return {"main": optimizer(model.parameters())}, {}

    def training_step(self, model, batch):
        x, y = batch
        return ((model(x) - y) ** 2).mean(), {}, len(x)


def test_suggestion_sits_below_the_lr_at_which_gradient_descent_diverges():
    """Least squares, full batch, plain SGD: the loss is quadratic with Hessian H = 2 XᵀX / n, and gradient
    descent diverges for lr > 2 / λmax(H). The range test must stop past that lr and suggest one below it."""
    from functools import partial

    from dlrun.engine.device import Precision
    from dlrun.modes.lr_find import lr_range_test

    torch.manual_seed(0)
    x = torch.randn(256, 8) * torch.linspace(0.5, 3.0, 8)  # condition number ~36
    y = x @ torch.randn(8, 1) + 0.1 * torch.randn(256, 1)
    hessian = 2 * x.T @ x / len(x)
    critical = 2 / torch.linalg.eigvalsh(hessian).max().item()
    model = nn.Linear(8, 1, bias=False)
    nn.init.zeros_(model.weight)
    result = lr_range_test(
        model,
        _MSE(),
        _FullBatch((x, y)),
        partial(torch.optim.SGD),
        Precision("32", torch.device("cpu")),
        num_steps=200,
        min_lr=1e-4,
        max_lr=10,
    )
    assert "diverged" in result.stopped or "became" in result.stopped
    assert result.lrs[-1] > critical  # it stopped only once the lr had passed the critical one
    assert critical / 100 < result.suggestion < critical
    # the valley ends past it: the smoothed loss lags the raw one (beta 0.98: ~35 steps, here ×8 in lr)
    assert critical < result.high < 5 * critical
    assert result.minimum < critical


def test_valley_suggestion_lies_halfway_down_the_falling_stretch():
    from dlrun.modes.lr_find import suggest

    lrs = [10 ** (i / 10) for i in range(70)]
    # flat, falling from index 20 to 39, then rising; suggest() drops the first 7 and the last 5 points
    losses = [2.0 + 0.001 * (i % 2) for i in range(20)] + [2.0 - 0.05 * i for i in range(1, 21)]
    losses += [1.0 + 0.2 * i for i in range(1, 31)]
    suggestion, low, high = suggest(lrs, losses)
    assert high == lrs[39]  # the bottom
    # the longest decreasing run is 2.001 (17), 2.0 (18), then the 20 falling points: 22 long; fastai counts
    # that length back from the bottom: 39 - 22 = 17
    assert low == lrs[17]
    assert suggestion == lrs[17 + 7 + 3]  # fastai's valley: a third, and a sixth, of the (39 - 17) on


def test_steep_and_minimum_follow_fastai():
    from dlrun.modes.lr_find import steep_and_minimum

    lrs = [10 ** (i / 10) for i in range(70)]
    losses = [2.0] * 30 + [2.0 - 0.01 * i for i in range(1, 11)] + [1.9 - 0.2 * i for i in range(1, 4)]
    losses += [1.3 + 0.1 * i for i in range(1, 28)]
    steep, minimum = steep_and_minimum(lrs, losses)
    assert steep == lrs[40]  # the fall of 0.2 per point starts there
    assert minimum == pytest.approx(lrs[42] / 10)


def test_lr_find_mode_writes_the_plot_and_prints_the_suggestion(compose_cfg, tmp_path, capsys):
    run(compose_cfg([*SMOKE, "mode=lr_find", "+lr_find.num_steps=30", "+lr_find.min_lr=1e-3"]))
    out = tmp_path / "run"
    assert (out / "lr_find.png").stat().st_size > 10_000
    result = json.loads((out / "lr_find.json").read_text())
    assert len(result["lrs"]) == len(result["losses"]) <= 30
    printed = capsys.readouterr().out
    if result["suggestion"] is not None:
        assert f"suggested optim.lr={result['suggestion']:.3g}" in printed
    assert files_under(tmp_path, "*.ckpt") == []


def test_lr_find_refuses_an_unknown_option(compose_cfg):
    with pytest.raises(DlrunError, match="lr_find.steps is not an option"):
        run(compose_cfg([*SMOKE, "mode=lr_find", "+lr_find.steps=5"]))


# ------------------------------------------------------------------ export
@pytest.mark.parametrize(
    "overrides",
    [["model=lenet"], ["model=resnet18", "data.resize=32"]],
    ids=["lenet", "resnet18"],
)
def test_exported_models_match_pytorch(overrides, compose_cfg, tmp_path):
    """A checkpoint of the configured model; the ONNX and torch.export programs agree with it within 1e-4."""
    pytest.importorskip("onnxruntime")
    from dlrun.run import build, model_node

    cfg = compose_cfg([*SMOKE, *overrides, "data.num_train=32", "data.num_val=16", "mode=export"])
    torch.manual_seed(0)
    model = build(model_node(cfg), "model")
    # the checkpoint's weights must be what gets exported, not a fresh initialisation
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    torch.save({"model": model.state_dict()}, tmp_path / "m.ckpt")
    cfg.ckpt_path = str(tmp_path / "m.ckpt")
    run(cfg)
    out = tmp_path / "run"
    result = json.loads((out / "export.json").read_text())
    assert result["max_abs_diff"]["onnx"] < 1e-4 and result["max_abs_diff"]["pt2"] < 1e-4
    assert (out / "model.onnx").stat().st_size > 10_000 and (out / "model.pt2").is_file()
    # the exported program holds the checkpoint's weights and takes other batch sizes
    program = torch.export.load(out / "model.pt2").module()
    size = 32 if "resnet18" in overrides[0] else 28
    x = torch.randn(3, 1, size, size)
    with torch.no_grad():
        assert (program(x) - model.eval()(x)).abs().max() < 1e-4


@torch.library.custom_op("dlrun_test::twice", mutates_args=())
def twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@twice.register_fake
def _(x):
    return torch.empty_like(x)


@torch.library.custom_op("dlrun_test::opaque", mutates_args=())
def opaque(x: torch.Tensor) -> torch.Tensor:  # no fake implementation: torch.export cannot trace it
    return x * 2


class Twice(nn.Module):
    def forward(self, x):
        return twice(x).flatten(1)


class Opaque(nn.Module):
    def forward(self, x):
        return opaque(x).flatten(1)


@pytest.mark.parametrize(
    "model, exporter, operator",
    [(Twice(), "torch.onnx", "dlrun_test.twice"), (Opaque(), "torch.export", "dlrun_test::opaque")],
)
def test_an_unexportable_model_names_the_operator(model, exporter, operator, tmp_path):
    pytest.importorskip("onnxruntime")
    from dlrun.modes.export import export_model

    with pytest.raises(DlrunError, match=f"{exporter} cannot export .*operator {operator} stopped it"):
        export_model(model, torch.randn(2, 1, 4, 4), tmp_path)


def test_export_refuses_data_without_images(compose_cfg, tmp_path):
    cfg = compose_cfg(["experiment=d2l/linear_regression", "mode=export", f"ckpt_path={tmp_path}"])
    with pytest.raises(DlrunError, match="mode=export exports image models"):
        run(cfg)
