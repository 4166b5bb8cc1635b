"""trainer=fast: `auto` precision, compile and channels_last chosen for the device, the fallback to eager
when compiling fails, and a training step that never waits on the device between log steps."""

import logging
from functools import partial

import pytest
import torch

from dlrun.data.fake import FakeImageData
from dlrun.engine import device as device_mod
from dlrun.engine import speed
from dlrun.engine.device import Precision
from dlrun.errors import DlrunError
from dlrun.models.lenet import LeNet
from dlrun.models.mlp import MLP

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_device_has_it(monkeypatch, native):
    monkeypatch.setattr(device_mod, "native_bf16", lambda device: native)
    assert Precision("auto", CPU).name == ("bf16-mixed" if native else "32")
    assert Precision("32", CPU).name == "32"  # an explicit value is kept


def test_auto_compile_uses_cuda_graphs_on_cuda_inductor_on_the_cpu_and_nothing_on_mps():
    assert speed.auto_compile("auto", CUDA) == {"mode": "reduce-overhead"}
    assert speed.auto_compile("auto", CPU) is True
    assert speed.auto_compile("auto", MPS) is False
    assert speed.auto_compile({"mode": "max-autotune"}, CUDA) == {"mode": "max-autotune"}


def test_auto_channels_last_is_for_convolutional_models_only(caplog):
    with caplog.at_level(logging.INFO, logger="dlrun"):
        assert speed.auto_channels_last("auto", LeNet()) is True
        assert speed.auto_channels_last("auto", MLP(image_size=8, hidden_sizes=[4])) is False
    assert "trainer.channels_last=auto: True (convolutional)" in caplog.text  # each choice is logged
    assert speed.auto_channels_last(False, LeNet()) is False


def test_fast_preset_sets_auto_and_explicit_keys_win(compose_cfg):
    fast = compose_cfg(["experiment=d2l/lenet", "trainer=fast"])
    assert (fast.trainer.precision, fast.trainer.compile, fast.trainer.channels_last) == ("auto",) * 3
    assert fast.data.on_device is True and fast.trainer.max_epochs == 10  # the experiment's epochs stay
    mine = compose_cfg(
        ["trainer=fast", "trainer.precision=32", "data.on_device=false", "trainer.compile=false"]
    )
    assert (mine.trainer.precision, mine.data.on_device, mine.trainer.compile) == (32, False, False)
    assert compose_cfg([]).data.on_device is False  # the default trainer keeps data in host memory


@pytest.fixture
def failing_backend():
    def fail(graph, example_inputs):
        raise RuntimeError("no kernel for this operator")

    yield fail  # torch.compile takes the backend function itself
    torch._dynamo.reset()


def test_a_model_that_fails_to_compile_trains_eagerly_after_one_warning(
    tmp_path, fit_run, failing_backend, monkeypatch, caplog
):
    lenet = dict(
        model=lambda: LeNet(activation="relu", pooling="max"),
        data=lambda: FakeImageData(batch_size=16, num_train=64, num_val=16, size=28),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        max_epochs=2,
        curves=False,
    )
    eager, _ = fit_run(tmp_path / "eager", **lenet)
    monkeypatch.setattr(speed, "auto_compile", lambda spec, device: {"backend": failing_backend})
    with caplog.at_level(logging.WARNING, logger="dlrun"):
        fast, trainer = fit_run(tmp_path / "fast", compile="auto", **lenet)
    warnings = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warnings) == 1 and "no kernel for this operator" in warnings[0]
    assert "\n" not in warnings[0]
    assert fast["status"] == "completed"
    assert [h["train/loss"] for h in fast["history"]] == pytest.approx(
        [h["train/loss"] for h in eager["history"]]
    )


def test_an_explicit_compile_that_fails_is_not_hidden(failing_backend):
    model = speed.compile_model(torch.nn.Linear(3, 2), {"backend": failing_backend})
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed, match="no kernel"):
        model(torch.randn(2, 3))


def test_the_fallback_raises_the_models_own_error_not_a_compile_warning(failing_backend, caplog):
    model = speed.compile_model(torch.nn.Linear(3, 2), {"backend": failing_backend}, fallback=True)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model(torch.randn(2, 5))  # wrong input: eager fails too, and says why
    assert "torch.compile failed" not in caplog.text
    assert model.weight.shape == (2, 3)  # attributes reach the module


HOST_SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu")


def count_host_syncs(monkeypatch) -> dict:
    """Counts the Tensor methods that make the host wait for the device (on CUDA), called from anywhere."""
    calls = dict.fromkeys(HOST_SYNCS, 0)
    for name in HOST_SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def test_training_steps_do_not_sync_with_the_device_between_log_steps(tmp_path, fit_run, monkeypatch):
    """What CUDA graphs and an asynchronous GPU need: the number of host syncs of an epoch does not grow with
    its number of steps (they happen per epoch and per log step only)."""
    counts = []
    for steps in (4, 16):
        calls = count_host_syncs(monkeypatch)
        fit_run(
            tmp_path / f"{steps}", num_train=8 * steps, batch_size=8, max_epochs=1, log_every_n_steps=1000
        )
        counts.append(dict(calls))
        monkeypatch.undo()
    assert sum(counts[0].values()) > 0  # the counter sees the per-epoch syncs
    assert counts[1] == counts[0]


def test_auto_is_refused_where_it_means_nothing():
    with pytest.raises(DlrunError, match="trainer.precision='fastest'"):
        Precision("fastest", CPU)
