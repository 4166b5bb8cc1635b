"""dl-run as a user runs it: a subprocess per command, outputs read back from disk."""

import json
import subprocess
import sys

import pytest
import yaml
from conftest import run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dlrun.errors import DlrunError

SMOKE = ["experiment=smoke"]


def only_run_dir(root):
    dirs = [p.parent for p in root.rglob("metrics.json")]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("smoke")
    proc = run_cli(SMOKE, cwd)
    return cwd, only_run_dir(cwd / "outputs"), proc


def test_smoke_run_writes_the_run_directory(smoke_run):
    cwd, run_dir, proc = smoke_run
    assert run_dir.parent == cwd / "outputs" / "smoke"
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "last.ckpt",
        "best.ckpt",
        "metrics.json",
        "dlrun.log",
    ):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert f"run    {run_dir}" in proc.stderr  # the end summary says where the outputs are
    assert "epoch 2/2 | train loss" in proc.stderr  # plain per-epoch lines when not a terminal


def test_metrics_json_holds_final_best_params_time_and_throughput(smoke_run):
    _, run_dir, _ = smoke_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert metrics["num_params"] == 61706  # LeNet at 28 px, 10 classes
    assert metrics["wall_time_s"] > 0 and metrics["train_examples_per_s"] > 0
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "throughput/train_examples_per_s"):
        assert key in metrics["final"], key
    best = metrics["best"]
    assert best["val/acc"] == max(h["val/acc"] for h in metrics["history"])
    assert 0.0 <= metrics["final"]["val/acc"] <= 1.0


def test_tensorboard_events_hold_the_scalars_config_and_hparams(smoke_run):
    _, run_dir, _ = smoke_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "lr",
        "throughput/train_examples_per_s",
        "train_step/loss",
    ):
        assert tag in scalars, tag
    val_acc = events.Scalars("val/acc")
    assert [e.step for e in val_acc] == [1, 2]
    assert val_acc[-1].value == pytest.approx(metrics["final"]["val/acc"])
    assert events.Scalars("lr")[0].value == pytest.approx(0.1)
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "_target_: dlrun.models.lenet.LeNet" in text
    assert any(tag.startswith("_hparams_/") for tag in events.PluginTagToContent("hparams"))
    assert "hparam/val/acc" in scalars


def test_app_returns_the_optimized_metric(compose_cfg, tmp_path):
    """Hydra hands the task function's return value to sweepers (Optuna et al.)."""
    from dlrun.cli import main

    cfg = compose_cfg([*SMOKE, "trainer.max_epochs=1", "logger=none"])
    returned = main.__wrapped__(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert cfg.optimized_metric == "val/acc"
    assert returned == pytest.approx(metrics["best"]["val/acc"])


def test_an_unlogged_optimized_metric_is_a_clear_error():
    from omegaconf import OmegaConf

    from dlrun.run import optimized_value

    cfg = OmegaConf.create({"optimized_metric": "val/accuracy"})
    with pytest.raises(DlrunError, match="optimized_metric='val/accuracy' is not a logged metric.*val/acc"):
        optimized_value(cfg, {"epoch": 1, "val/acc": 0.5, "train/loss": 1.0})
    assert optimized_value(OmegaConf.create({"optimized_metric": "val/acc"}), {"val/acc": 0.5}) == 0.5


def test_multirun_of_two_values_gives_two_runs(tmp_path):
    run_cli(["-m", *SMOKE, "optim.lr=0.05,0.2", "trainer.max_epochs=1", "logger=none"], tmp_path)
    runs = sorted(p.parent for p in (tmp_path / "multirun").rglob("metrics.json"))
    assert [r.name for r in runs] == ["0", "1"]
    lrs = [json.loads((r / "metrics.json").read_text())["final"]["lr"] for r in runs]
    assert lrs == [0.05, 0.2]
    assert (runs[0].parent / "multirun.yaml").is_file()


def test_runs_started_together_get_different_directories(tmp_path):
    args = [
        sys.executable,
        "-m",
        "dlrun",
        *SMOKE,
        "trainer.max_epochs=1",
        "logger=none",
        "trainer.checkpoint=false",
    ]
    procs = [
        subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert len(list((tmp_path / "outputs" / "smoke").iterdir())) == 2


def test_unknown_model_lists_the_available_ones(tmp_path):
    proc = run_cli(["model=resnet1000"], tmp_path, check=False)
    assert proc.returncode != 0
    assert "Could not find 'model/resnet1000'" in proc.stderr
    assert "lenet" in proc.stderr and "mlp" in proc.stderr


def test_missing_dataset_is_one_clear_line(tmp_path):
    proc = run_cli(
        ["data=fashion_mnist", f"paths.data_dir={tmp_path / 'nothing'}", "data.download=false"],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert str(tmp_path / "nothing" / "FashionMNIST" / "raw") in errors[0]
    assert "train-images-idx3-ubyte" in errors[0]


def test_exploding_loss_stops_with_a_clear_message(tmp_path):
    proc = run_cli([*SMOKE, "model=mlp", "optim.lr=1e30", "trainer.max_epochs=3"], tmp_path, check=False)
    assert proc.returncode == 2
    assert "error: training loss became" in proc.stderr and "Traceback" not in proc.stderr
    metrics = json.loads(next((tmp_path / "outputs").rglob("metrics.json")).read_text())
    assert metrics["status"] == "failed: non-finite loss"


def test_bad_value_names_the_group(tmp_path):
    proc = run_cli([*SMOKE, "trainer.precision=16-mixed", "trainer.device=cpu"], tmp_path, check=False)
    assert proc.returncode == 2
    assert "error: trainer.precision=16-mixed needs a CUDA device" in proc.stderr


def test_help_lists_groups_and_options(tmp_path):
    out = run_cli(["--help"], tmp_path).stdout
    assert "== Config groups ==" in out
    for line in ("model: ", "data: ", "optim: ", "experiment/d2l: "):
        assert line in out, line
    groups = {
        line.split(": ")[0]: line.split(": ")[1].split(", ") for line in out.splitlines() if ": " in line
    }
    assert {"fake", "fashion_mnist", "mnist"} <= set(groups["data"])
    assert {"lenet", "lenet_bn", "mlp"} <= set(groups["model"])
    assert {"adam", "adamw", "sgd", "d2l_adam", "yogi"} <= set(groups["optim"])


def test_cfg_job_and_info(tmp_path):
    cfg = yaml.safe_load(run_cli(["experiment=d2l/lenet", "--cfg", "job"], tmp_path).stdout)
    assert cfg["optim"]["lr"] == 0.9 and cfg["data"]["batch_size"] == 256 and cfg["name"] == "d2l_lenet"
    info = run_cli(["--info", "defaults"], tmp_path).stdout
    assert "model/lenet_relu" in info
    assert not (tmp_path / "outputs").exists()  # neither ran anything


def test_predict_mode_needs_a_checkpoint_and_data_to_predict(smoke_run, tmp_path):
    proc = run_cli([*SMOKE, "mode=predict"], tmp_path, check=False)
    assert proc.returncode == 2 and "error: mode=predict needs ckpt_path=" in proc.stderr
    _, run_dir, _ = smoke_run
    proc = run_cli([*SMOKE, "mode=predict", f"ckpt_path={run_dir}"], tmp_path, check=False)
    assert proc.returncode == 2 and "error: FakeImageData has no test set to predict" in proc.stderr
