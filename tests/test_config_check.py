"""dlrun.config_check: a value its consumer does not accept stops dl-run with one line, before data loads."""

from typing import Annotated, Literal

import pytest
from conftest import run_cli
from omegaconf import OmegaConf
from test_config import OPTIONS, overrides_for

from dlrun.config_check import check_config
from dlrun.errors import DlrunError
from dlrun.ranges import Min, OneOf

BAD_VALUES = [
    ("optim.lr=abc", "optim.lr=abc", "float"),
    ("trainer.max_epochs=ten", "trainer.max_epochs=ten", "int"),
    ("data.batch_size=0", "data.batch_size=0", ">= 1"),
    ("trainer.precision=64", "trainer.precision=64", "bf16-mixed"),
    ("sched.interval=batch", "sched.interval=batch", "epoch, step"),
]


@pytest.mark.parametrize("override, named, allowed", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_value_exits_2_with_one_line_before_data_loads(tmp_path, override, named, allowed):
    # Fashion-MNIST from an empty folder (no network in tests): loading it would fail with another error.
    empty = tmp_path / "no_data"
    empty.mkdir()
    proc = run_cli(
        ["data=fashion_mnist", f"paths.data_dir={empty}", f"paths.output_root={tmp_path / 'out'}", override],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {named} is not allowed") and allowed in lines[0]
    assert not list(tmp_path.rglob("metrics.json")) and not list(empty.iterdir())


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_shipped_option_passes(compose_cfg, group, option):
    if group == "hparams_search":
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    check_config(compose_cfg(overrides_for(group, option)))


@pytest.mark.parametrize("precision", ["32", "32-true", "bf16", "bf16-mixed", "16", "16-mixed"])
def test_lightning_precision_spellings_are_accepted(compose_cfg, precision):
    check_config(compose_cfg([f"trainer.precision={precision}"]))


def test_precision_aliases_reach_the_engine():
    import torch

    from dlrun.engine.device import Precision

    assert Precision("bf16", torch.device("cpu")).name == "bf16-mixed"
    assert Precision("32-true", torch.device("cpu")).name == "32"
    with pytest.raises(DlrunError, match="trainer.precision='bf16-true' is unknown"):
        Precision("bf16-true", torch.device("cpu"))


class Toy:
    """A consumer declaring its ranges the documented way."""

    def __init__(
        self,
        width: Annotated[int, Min(1)] = 8,
        dropout: Annotated[float, Min(0), OneOf(0.0, 0.5)] = 0.0,
        mode: Literal["a", "b"] = "a",
        scale: float | None = None,
    ):
        pass


def toy_cfg(**values) -> OmegaConf:
    return OmegaConf.create({"model": {"_target_": f"{__name__}.Toy", **values}})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"width": 0}, "model.width=0 is not allowed: width of test_config_check.Toy must be >= 1"),
        ({"width": 2.5}, "model.width=2.5 is not allowed: width of test_config_check.Toy must be int >= 1"),
        ({"width": True}, "model.width=True is not allowed"),
        ({"dropout": 0.2}, "model.dropout=0.2 is not allowed: dropout of test_config_check.Toy must be one"),
        ({"mode": "c"}, "model.mode=c is not allowed: mode of test_config_check.Toy must be one of a, b"),
        ({"scale": "big"}, "model.scale=big is not allowed: scale of test_config_check.Toy must be float or"),
        ({"heigth": 3}, "model.heigth is not an argument of test_config_check.Toy; it takes: width, dropout"),
    ],
)
def test_annotations_and_ranges_of_the_target(values, message):
    with pytest.raises(DlrunError) as err:
        check_config(toy_cfg(**values))
    assert str(err.value).startswith(message)


def test_accepted_values_and_nested_targets():
    check_config(toy_cfg(width=3, dropout=0.5, mode="b", scale=2))  # an int is a float
    nested = {"scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 0}}
    with pytest.raises(DlrunError, match=r"sched.scheduler.step_size=0 is not allowed: .* must be >= 1"):
        check_config(OmegaConf.create({"sched": nested | {"interval": "epoch"}}))


def test_unimportable_target_is_one_line():
    with pytest.raises(DlrunError, match=r"model._target_=dlrun.models.nope.Net cannot be imported"):
        check_config(OmegaConf.create({"model": {"_target_": "dlrun.models.nope.Net"}}))
