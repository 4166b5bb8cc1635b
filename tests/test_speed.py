"""Trainer speed options: they change memory layout and kernels, not the numbers a run produces."""

from functools import partial

import pytest
import torch

from dlrun.data.fake import FakeImageData
from dlrun.engine import checkpoint as ckpt_io
from dlrun.engine.seed import seed_everything
from dlrun.engine.speed import channels_last_batch, compile_model
from dlrun.engine.trainer import Trainer
from dlrun.errors import DlrunError
from dlrun.models.lenet import LeNet


@pytest.fixture
def fit_lenet(fit_run):
    def fit(run_dir, **trainer_kwargs):
        return fit_run(
            run_dir,
            model=lambda: LeNet(activation="relu", pooling="max"),
            data=FakeImageData(batch_size=32, num_train=128, num_val=32, size=28),
            optimizer=partial(torch.optim.SGD, lr=0.1),
            **(
                {"max_epochs": 2, "curves": False, "monitor": "val/loss", "monitor_mode": "min"}
                | trainer_kwargs
            ),
        )

    return fit


def losses(summary):
    return [h["train/loss"] for h in summary["history"]] + [summary["final"]["val/loss"]]


def test_channels_last_trains_in_nhwc_and_gives_the_same_losses(tmp_path, fit_lenet):
    plain, _ = fit_lenet(tmp_path / "plain")
    nhwc, trainer = fit_lenet(tmp_path / "nhwc", channels_last=True)
    conv = trainer.model[3].weight  # 6 input channels: NCHW and NHWC differ
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert nhwc["channels_last"] is True
    assert losses(nhwc) == pytest.approx(losses(plain), rel=1e-4)


def test_channels_last_batch_converts_only_4d_float_tensors():
    x, y = torch.rand(2, 3, 4, 5), torch.tensor([1, 0])
    out_x, out_y = channels_last_batch((x, y))
    assert out_x.is_contiguous(memory_format=torch.channels_last) and torch.equal(out_x, x)
    assert out_y is y
    tokens = torch.zeros(2, 3, 4, 5, dtype=torch.long)
    assert channels_last_batch({"t": tokens})["t"] is tokens


def test_compiled_step_matches_eager_and_checkpoint_has_plain_names(tmp_path, fit_lenet):
    eager, _ = fit_lenet(tmp_path / "eager", max_epochs=1)
    compiled, trainer = fit_lenet(tmp_path / "compiled", max_epochs=1, compile={"backend": "aot_eager"})
    assert trainer.step_model is not trainer.model and compiled["compile"] is True
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-4)
    state = ckpt_io.load(tmp_path / "compiled" / "last.ckpt")["model"]
    assert not any(k.startswith("_orig_mod.") for k in state)
    LeNet(activation="relu", pooling="max").load_state_dict(state)  # loads into an uncompiled model


def test_inductor_compiled_loss_equals_eager_on_the_same_batch():
    seed_everything(0)
    model = LeNet(activation="relu", pooling="max")
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    eager = torch.nn.functional.cross_entropy(model(x), y)
    compiled = torch.nn.functional.cross_entropy(compile_model(model, True)(x), y)
    assert compiled.item() == pytest.approx(eager.item(), rel=1e-5)


def test_bad_speed_options_are_clear_errors():
    with pytest.raises(DlrunError, match="matmul_precision='fast'.*highest, high, medium"):
        Trainer(device="cpu", matmul_precision="fast")
    with pytest.raises(DlrunError, match="num_threads=0 must be >= 1"):
        Trainer(device="cpu", num_threads=0)
    with pytest.raises(DlrunError, match="trainer.compile"):
        compile_model(torch.nn.Linear(2, 2), {"no_such_option": 1})


def test_num_threads_and_matmul_precision_are_applied():
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    try:
        Trainer(device="cpu", num_threads=1, matmul_precision="medium")
        assert torch.get_num_threads() == 1
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(precision)
