"""logger=csv, logger=mlflow and several loggers at once."""

import csv
import json

import pytest
from conftest import run_cli

from dlrun.loggers.csv import CSVLogger
from dlrun.loggers.many import Loggers

QUICK = ["experiment=smoke", "print_config=false", "trainer.checkpoint=false", "trainer.progress_bar=false"]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_rows_per_epoch_readable_after_every_epoch(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"train/loss": 1.0, "val/acc": 0.5}, step=1)
    assert read_rows(tmp_path / "metrics.csv") == [{"epoch": "1", "train/loss": "1.0", "val/acc": "0.5"}]
    logger.log_metrics({"train_step/loss": 0.9}, step=7)  # per optimizer step: not an epoch row
    logger.log_metrics({"val/bleu": 0.25}, step=1)  # a task's end-of-epoch report joins its epoch's row
    logger.log_metrics({"train/loss": 0.8, "val/acc": 0.6}, step=2)
    rows = read_rows(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["val/bleu"] == "0.25" and rows[1]["val/bleu"] == ""
    # no logger.close(): as after a crash, the file is whole; a resumed run continues it
    resumed = CSVLogger(tmp_path)
    resumed.log_metrics({"train/loss": 0.7, "val/acc": 0.7}, step=3)
    assert [r["train/loss"] for r in read_rows(tmp_path / "metrics.csv")] == ["1.0", "0.8", "0.7"]
    assert not list(tmp_path.glob(".*tmp*"))


class Recorder:
    def __init__(self, log_dir, fail_close=False):
        self.log_dir, self.fail_close, self.calls = log_dir, fail_close, []

    def log_metrics(self, metrics, step):
        self.calls.append((metrics, step))

    def close(self):
        self.calls.append("closed")
        if self.fail_close:
            raise RuntimeError("disk full")


def test_loggers_builds_each_with_the_run_dir_and_closes_all(tmp_path):
    target = f"{__name__}.Recorder"
    many = Loggers(tmp_path, a={"_target_": target, "fail_close": True}, b={"_target_": target})
    assert [r.log_dir for r in many.loggers] == [tmp_path, tmp_path]
    many.log_metrics({"x": 1.0}, 3)
    with pytest.raises(RuntimeError, match="disk full"):
        many.close()
    assert all(r.calls == [({"x": 1.0}, 3), "closed"] for r in many.loggers)


def test_tensorboard_and_csv_together(tmp_path):
    run_cli([*QUICK, "logger=[tensorboard,csv]"], tmp_path)
    (run_dir,) = [p.parent for p in tmp_path.rglob("metrics.json")]
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    rows = read_rows(run_dir / "metrics.csv")
    assert len(rows) == len(history) == 2  # experiment=smoke: 2 epochs
    assert [float(r["val/acc"]) for r in rows] == pytest.approx([h["val/acc"] for h in history])
    assert list(run_dir.glob("events.out.tfevents.*"))


def test_mlflow_runs_of_a_sweep_read_back(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a folder store only on request
    store = tmp_path / "store"
    run_cli(
        ["-m", *QUICK, "logger=mlflow", f"logger.mlflow.tracking_uri={store}", "optim.lr=0.05,0.2"], tmp_path
    )
    mlflow.set_tracking_uri(store.as_uri())
    runs = mlflow.search_runs(experiment_names=["smoke"], output_format="list")
    assert len(runs) == 2
    assert {r.data.tags["sweep_job"] for r in runs} == {"0", "1"}
    assert len({r.data.tags["sweep"] for r in runs}) == 1  # one sweep groups both
    for run in runs:
        assert run.info.status == "FINISHED"
        run_dir = tmp_path / run.data.tags["run_dir"]
        history = json.loads((run_dir / "metrics.json").read_text())["history"]
        client = mlflow.tracking.MlflowClient(store.as_uri())
        val_acc = client.get_metric_history(run.info.run_id, "val/acc")
        assert [m.step for m in val_acc] == [h["epoch"] for h in history]
        assert [m.value for m in val_acc] == pytest.approx([h["val/acc"] for h in history])
        assert client.get_metric_history(run.info.run_id, "train_step/loss")  # per step too
        assert run.data.params["optim.lr"] in ("0.05", "0.2") and run.data.params["name"] == "smoke"
        artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert {"curves.png", "config.yaml", "metrics.json"} <= artifacts
    assert {r.data.params["optim.lr"] for r in runs} == {"0.05", "0.2"}
