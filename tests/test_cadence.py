"""Per-epoch work at the cadence a user asks for: validation and checkpoints every n epochs, the last epoch
always; best epoch and early stopping on validated epochs; the time to a target metric."""

import pytest
from test_engine import RecordCheckpoints as SeesCheckpoints

from dlrun.engine import checkpoint as ckpt_io
from dlrun.errors import DlrunError


def test_validation_and_checkpoints_every_n_epochs_and_always_at_the_end(tmp_path, fit_run):
    task = SeesCheckpoints(tmp_path)
    summary, _ = fit_run(tmp_path, task=task, max_epochs=5, check_val_every_n_epoch=2)
    assert [("val/acc" in h) for h in summary["history"]] == [False, True, False, True, True]
    assert task.seen == [None, None, 2, 2, 4]  # last.ckpt after epochs 2, 4 and 5 (the end)
    assert ckpt_io.load(tmp_path / "last.ckpt")["state"]["epoch"] == 5
    assert summary["best"]["epoch"] in (2, 4, 5)
    full, _ = fit_run(tmp_path / "every", max_epochs=5)
    # validation draws no random numbers: the training is the same at any cadence
    assert [h["train/loss"] for h in summary["history"]] == [h["train/loss"] for h in full["history"]]
    assert summary["final"]["val/acc"] == full["final"]["val/acc"]


def test_checkpoint_cadence_can_differ_from_validation(tmp_path, fit_run):
    task = SeesCheckpoints(tmp_path)
    fit_run(tmp_path, task=task, max_epochs=4, check_val_every_n_epoch=2, checkpoint_every_n_epochs=1)
    assert task.seen == [None, 1, 2, 3]


def test_early_stopping_counts_validated_epochs(tmp_path, fit_run):
    summary, _ = fit_run(
        tmp_path,
        max_epochs=30,
        check_val_every_n_epoch=2,
        # val/loss falls every validated epoch here, so watched as "max" it never improves after the first
        early_stopping={"monitor": "val/loss", "mode": "max", "patience": 2},
    )
    losses = [h["val/loss"] for h in summary["history"] if "val/loss" in h]
    assert losses == sorted(losses, reverse=True)
    assert summary["epochs"] == 6 and summary["stopped_early"]["best_epoch"] == 2


def test_time_to_target_is_recorded(tmp_path, fit_run):
    summary, _ = fit_run(tmp_path, max_epochs=4, target_metric=0.2)  # val/acc, max; chance is 0.1
    reached = summary["reached_target"]
    first = next(h["epoch"] for h in summary["history"] if h["val/acc"] >= 0.2)
    assert reached["epoch"] == first and reached["target"] == 0.2 and reached["time_s"] > 0
    summary, _ = fit_run(tmp_path / "never", max_epochs=1, target_metric=1.5)
    assert summary["reached_target"] is None


def test_bad_cadence_is_refused(fit_run, tmp_path):
    with pytest.raises(DlrunError, match="trainer.check_val_every_n_epoch=0 must be >= 1"):
        fit_run(tmp_path, check_val_every_n_epoch=0)
