"""Issue 9's runner features for every task: early stopping, curves.png, sweep summaries and K-fold."""

import csv
import json

import pytest
import torch
from conftest import run_cli

from dlrun.data.fake import FakeImageData
from dlrun.engine.curves import plot_history, series_names
from dlrun.engine.monitor import EarlyStopping
from dlrun.errors import DlrunError


def scripted(values, key="val/loss"):
    return [{"epoch": i + 1, key: v} for i, v in enumerate(values)]


def first_stop(stopper, values):
    """Feed the sequence epoch by epoch, as the trainer does; the epoch it stops at (None: never)."""
    for n in range(1, len(values) + 1):
        stop = stopper.check(scripted(values[:n], stopper.monitor or "val/loss"))
        if stop:
            return stop
    return None


def test_early_stopping_stops_at_the_right_epoch_on_a_scripted_sequence():
    losses = [1.0, 0.8, 0.7, 0.71, 0.69999, 0.75, 0.72, 0.5]
    assert first_stop(EarlyStopping("val/loss", "min", patience=3), losses) is None  # 0.5 comes in time
    stop = first_stop(EarlyStopping("val/loss", "min", patience=2), losses)
    assert stop == {
        "epoch": 7,
        "monitor": "val/loss",
        "mode": "min",
        "best": 0.69999,
        "best_epoch": 5,
        "patience": 2,
    }
    # with min_delta 0.01, 0.69999 is no real improvement over 0.7: the wait starts after epoch 3
    stop = first_stop(EarlyStopping("val/loss", "min", patience=2, min_delta=0.01), losses)
    assert stop["epoch"] == 5 and stop["best_epoch"] == 3
    acc = [0.5, 0.6, 0.6, 0.59, 0.61]
    stop = first_stop(EarlyStopping("val/acc", "max", patience=2), acc)
    assert stop["epoch"] == 4 and stop["best"] == 0.6
    assert first_stop(EarlyStopping(None), losses) is None


def test_early_stopping_rejects_bad_settings():
    with pytest.raises(DlrunError, match="mode"):
        EarlyStopping("val/loss", "lowest")
    with pytest.raises(DlrunError, match="not logged; available: val/loss"):
        EarlyStopping("val/acc").check(scripted([1.0]))


def test_curves_png_plots_the_logged_series(tmp_path):
    history = [
        {
            "epoch": e,
            "train/loss": 1 / e,
            "val/loss": 1.2 / e,
            "train/acc": e / 10,
            "val/acc": e / 11,
            "lr": 0.1,
            "throughput/train_examples_per_s": 5.0,
        }
        for e in range(1, 6)
    ]
    assert series_names(history, "val/acc") == ["train/loss", "val/loss", "train/acc", "val/acc"]
    plot_history(history, tmp_path / "curves.png", "val/acc", log_scale=True)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_join_validated_epochs_and_show_a_scheduled_lr(tmp_path):
    history = [{"epoch": e, "train/loss": 1 / e, "lr": 0.1 / e} for e in range(1, 8)]
    for h in history[2::3]:  # validated every 3 epochs, and after the last
        h["val/loss"] = h["train/loss"] * 1.2
    history[-1]["val/loss"] = 0.2
    fig = plot_history(
        history[:-1], tmp_path / "curves.png", "val/loss"
    )  # mid-run: the last epoch unvalidated
    loss_ax, lr_ax = fig.axes
    val = next(line for line in loss_ax.get_lines() if line.get_label() == "val/loss")
    assert list(val.get_xdata()) == [3, 6]  # one line through the validated epochs, no NaN gaps
    assert list(lr_ax.get_lines()[0].get_ydata()) == [0.1 / e for e in range(1, 7)]
    constant = [h | {"lr": 0.1} for h in history]
    assert (
        len(plot_history(constant, tmp_path / "c.png", "val/loss").axes) == 1
    )  # no lr axis for a constant lr


def test_a_run_writes_curves_and_stops_early(tmp_path):
    run_cli(
        [
            "experiment=smoke",
            "trainer.max_epochs=30",
            "optim.lr=0.0",
            "trainer.early_stopping.monitor=val/loss",
            "trainer.early_stopping.patience=2",
            "hydra.run.dir=run",
            "logger=none",
        ],
        tmp_path,
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # lr 0: val/loss never changes, so the run stops after patience epochs without improvement
    assert metrics["epochs"] == 3 and metrics["stopped_early"]["best_epoch"] == 1
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert torch.load(tmp_path / "run" / "best.ckpt", weights_only=True)["state"]["best"]["epoch"] == 1


def test_multirun_writes_summary_csv_and_png(tmp_path):
    run_cli(
        [
            "-m",
            "experiment=smoke",
            "optim.weight_decay=0,0.5",
            "trainer.max_epochs=2",
            "logger=none",
            "hydra.sweep.dir=sweep",
        ],
        tmp_path,
    )
    with open(tmp_path / "sweep" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["overrides"] for r in rows] == ["optim.weight_decay=0", "optim.weight_decay=0.5"]
    for row in rows:
        metrics = json.loads((tmp_path / "sweep" / row["job"] / "metrics.json").read_text())
        assert float(row["final val/loss"]) == pytest.approx(metrics["final"]["val/loss"])
        assert float(row["best val/acc"]) == pytest.approx(metrics["best"]["val/acc"])
    assert (tmp_path / "sweep" / "summary.png").stat().st_size > 1000


def test_folds_partition_the_data_and_are_seeded():
    data = FakeImageData(num_train=50, num_val=10, size=4)
    folds = [data.fold(k, 5, seed=3) for k in range(5)]
    pool = {tuple(x.flatten().tolist()) for x in data.x_train}
    validated = [tuple(x.flatten().tolist()) for f in folds for x in f.x_val]
    assert len(validated) == 50 and set(validated) == pool  # each example validated exactly once
    for f in folds:
        assert len(f.x_train) == 40 and len(f.y_val) == 10
        assert not {tuple(x.flatten().tolist()) for x in f.x_train} & {
            tuple(x.flatten().tolist()) for x in f.x_val
        }
    again = data.fold(2, 5, seed=3)
    assert torch.equal(again.x_val, folds[2].x_val)
    assert not torch.equal(data.fold(2, 5, seed=4).x_val, folds[2].x_val)
    assert torch.equal(
        data.x_val, FakeImageData(num_train=50, num_val=10, size=4).x_val
    )  # original untouched
    with pytest.raises(DlrunError, match="kfold=1"):
        data.fold(0, 1)


def test_kfold_run_trains_k_models_and_reports_mean_and_std(tmp_path):
    run_cli(
        [
            "experiment=smoke",
            "trainer.kfold=3",
            "trainer.kfold_refit=true",
            "trainer.max_epochs=1",
            "hydra.run.dir=run",
        ],
        tmp_path,
    )
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    folds = [json.loads((run / f"fold_{k}" / "metrics.json").read_text()) for k in range(3)]
    accs = [f["final"]["val/acc"] for f in folds]
    assert metrics["kfold"] == 3
    assert metrics["mean"]["val/acc"] == pytest.approx(sum(accs) / 3)
    assert metrics["std"]["val/acc"] == pytest.approx(torch.tensor(accs).std(unbiased=False).item(), abs=1e-7)
    assert (run / "refit" / "best.ckpt").is_file() and (run / "summary.csv").is_file()
    assert list((run / "fold_0").glob("events.out.tfevents.*"))  # each fold logs under its own sub-run


def test_predict_uses_the_refit_model_else_the_average_of_the_folds(tmp_path):
    from dlrun.models.ensemble import Ensemble
    from dlrun.run import checkpoints_for_prediction

    for k in range(3):
        (tmp_path / f"fold_{k}").mkdir()
        (tmp_path / f"fold_{k}" / "best.ckpt").write_bytes(b"")
    assert checkpoints_for_prediction(tmp_path) == [tmp_path / f"fold_{k}" / "best.ckpt" for k in range(3)]
    (tmp_path / "refit").mkdir()
    (tmp_path / "refit" / "last.ckpt").write_bytes(b"")
    assert checkpoints_for_prediction(tmp_path) == [tmp_path / "refit" / "last.ckpt"]
    with pytest.raises(DlrunError, match="no .ckpt file"):
        checkpoints_for_prediction(tmp_path / "fold_0" / "nothing")
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    x = torch.randn(4, 2)
    torch.testing.assert_close(Ensemble([a, b])(x), (a(x) + b(x)) / 2)
