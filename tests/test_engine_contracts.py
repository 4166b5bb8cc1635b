"""The engine's shape: the recorded runs unchanged, callbacks, one monitor, tasks with several optimizers
(the book's GAN), the data contract."""

import csv
import json
import os
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, run_cli

from dlrun.data.gaussian import GaussianData
from dlrun.engine import checkpoint as ckpt_io
from dlrun.engine.callbacks import Callback
from dlrun.engine.monitor import EarlyStopping, Monitor, mode_of
from dlrun.engine.trainer import Trainer
from dlrun.errors import DlrunError
from dlrun.models.gan import DCGAN, GaussianGAN
from dlrun.tasks.gan import GANTask

RECORDED = json.loads((Path(__file__).parent / "data" / "recorded_runs.json").read_text())


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data (The Time Machine, fra-eng)")
@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_runs_give_the_same_numbers(tmp_path, name):
    """Per-epoch metrics recorded before the engine refactor (tests/data/recorded_runs.json)."""
    run = RECORDED[name]
    run_cli(
        [*run["overrides"].split(), "logger=none", f"hydra.run.dir={tmp_path}"],
        tmp_path,
        env={"DLRUN_DATA_DIR": str(SHARED_DATA)},
    )
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    for got, want in zip(history, run["history"], strict=True):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-9), (name, got["epoch"], key)


def test_early_stopping_mode_follows_the_watched_metric():
    loss_monitor = Monitor("val/loss", "min")
    rising = [{"epoch": e, "val/acc": a, "val/loss": 1.0} for e, a in enumerate([0.5, 0.6, 0.7, 0.8], 1)]
    falling = [{"epoch": e, "val/acc": a, "val/loss": 1.0} for e, a in enumerate([0.8, 0.7, 0.6, 0.5], 1)]
    watch_acc = EarlyStopping("val/acc", patience=2)  # no mode given: accuracy rises
    assert watch_acc.check(rising, loss_monitor) is None
    stop = watch_acc.check(falling[:3], loss_monitor)
    assert (stop["mode"], stop["best"], stop["best_epoch"], stop["epoch"]) == ("max", 0.8, 1, 3)
    # the trainer's own metric takes the trainer's direction; an explicit mode wins
    assert EarlyStopping("val/loss").watching(Monitor("val/loss", "max")).mode == "max"
    assert EarlyStopping("val/acc", mode="min").watching(loss_monitor).mode == "min"
    assert [mode_of(m) for m in ("val/acc", "val/bleu", "val/ppl", "train/loss_D")] == [
        "max",
        "max",
        "min",
        "min",
    ]


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_fit_start(self, trainer):
        self.events.append(("fit_start", trainer.run_dir))

    def on_train_epoch_start(self, trainer, epoch):
        self.events.append(("epoch_start", epoch))

    def on_optimizer_step(self, trainer):
        self.events.append(("step", trainer.state.global_step))

    def on_validation_end(self, trainer, epoch, metrics):
        metrics["custom/twice_acc"] = 2 * metrics["val/acc"]

    def on_epoch_end(self, trainer, epoch, metrics):
        self.events.append(("epoch_end", epoch, "custom/twice_acc" in trainer.state.history[-1]))

    def on_fit_end(self, trainer, status):
        self.events.append(("fit_end", status))


def test_callbacks_see_every_event_and_can_add_metrics(tmp_path, fit_run):
    recorder = Recorder()
    summary, _ = fit_run(tmp_path, max_epochs=2, num_train=64, callbacks=[recorder])
    assert recorder.events[0] == ("fit_start", tmp_path) and recorder.events[-1] == ("fit_end", "completed")
    assert [e for e in recorder.events if e[0] == "step"] == [("step", s) for s in range(1, 5)]
    assert ("epoch_end", 2, True) in recorder.events
    assert summary["final"]["custom/twice_acc"] == 2 * summary["final"]["val/acc"]


def test_a_users_callback_comes_from_config(compose_cfg):
    from dlrun.run import build_callbacks

    cfg = compose_cfg(["+callbacks.rec._target_=tests.test_engine_contracts.Recorder"])
    assert [type(c).__name__ for c in build_callbacks(cfg)] == ["Recorder"]
    cfg = compose_cfg(["+callbacks.bad._target_=collections.OrderedDict"])
    with pytest.raises(
        DlrunError, match="callbacks.bad: OrderedDict is not a dlrun.engine.callbacks.Callback"
    ):
        build_callbacks(cfg)


def test_the_data_contract_is_checked(tmp_path):
    class NotData:
        def setup(self, device, seed=0):
            pass

    trainer = Trainer(device="cpu", progress_bar=False, max_epochs=1)
    with pytest.raises(DlrunError, match="NotData is not a data module .*train_loader, val_loader"):
        trainer.fit(GaussianGAN(), GANTask(), NotData(), partial(torch.optim.Adam), run_dir=tmp_path)


def fit_gan(run_dir, max_epochs, resume=None, num_examples=96):
    torch.manual_seed(0)
    trainer = Trainer(device="cpu", progress_bar=False, max_epochs=max_epochs, monitor=None, resume=resume)
    summary = trainer.fit(
        GaussianGAN(),
        GANTask(discriminator_lr=0.05, generator_lr=0.005, num_samples=200),
        GaussianData(batch_size=8, num_examples=num_examples),
        partial(torch.optim.Adam, lr=0.01),
        run_dir=run_dir,
    )
    return summary, trainer


def test_gan_alternates_two_optimizers_and_writes_samples(tmp_path):
    summary, trainer = fit_gan(tmp_path, max_epochs=2)
    opts = trainer.optimization.optimizers
    assert sorted(opts) == ["discriminator", "generator"]
    assert [o.param_groups[0]["lr"] for o in (opts["discriminator"], opts["generator"])] == [0.05, 0.005]
    assert summary["global_step"] == 24 and {"train/loss_D", "train/loss_G"} <= set(summary["final"])
    with open(tmp_path / "samples.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["x1", "x2"] and len(rows) == 201
    stats = json.loads((tmp_path / "samples.json").read_text())
    assert stats["distribution"]["mean"] == [1.0, 2.0]
    assert (tmp_path / "samples.png").stat().st_size > 0
    ckpt = ckpt_io.load(tmp_path / "last.ckpt")
    assert sorted(ckpt["optimizers"]) == ["discriminator", "generator"]
    assert not (tmp_path / "best.ckpt").exists()  # monitor None: no best epoch


def test_gan_stopped_half_way_and_resumed_equals_the_uninterrupted_run(tmp_path):
    full, _ = fit_gan(tmp_path / "full", max_epochs=4)
    fit_gan(tmp_path / "half", max_epochs=2)
    resumed, _ = fit_gan(tmp_path / "resumed", max_epochs=4, resume=str(tmp_path / "half"))
    assert resumed["resumed_from"] and numbers(resumed["history"]) == numbers(full["history"])
    assert (tmp_path / "resumed" / "samples.csv").read_text() == (
        tmp_path / "full" / "samples.csv"
    ).read_text()


def numbers(history):
    """An epoch history without its timings."""
    return [{k: v for k, v in h.items() if not k.startswith(("time/", "throughput/"))} for h in history]


def test_manual_tasks_refuse_accumulation(tmp_path):
    trainer = Trainer(device="cpu", progress_bar=False, max_epochs=1, accumulate_grad_batches=2)
    with pytest.raises(DlrunError, match="runs its own updates; set trainer.accumulate_grad_batches=1"):
        trainer.fit(GaussianGAN(), GANTask(), GaussianData(), partial(torch.optim.Adam), run_dir=tmp_path)


def test_dcgan_shapes():
    model = DCGAN(latent_dim=16, channels=1, width_g=4, width_d=4)
    images = model.generator(torch.randn(3, *model.latent_shape))
    assert images.shape == (3, 1, 64, 64) and images.abs().max() <= 1
    assert model.discriminator(images).shape == (3, 1, 1, 1)


def test_gan_experiment_composes_with_the_books_settings(compose_cfg):
    cfg = compose_cfg(["experiment=d2l/gan"])
    assert (cfg.task.discriminator_lr, cfg.task.generator_lr, cfg.data.batch_size) == (0.05, 0.005, 8)
    assert (
        cfg.trainer.max_epochs == 20 and cfg.trainer.monitor is None and cfg.optim._target_.endswith("Adam")
    )
    cfg = compose_cfg(["experiment=d2l/dcgan_fmnist"])
    assert cfg.data.resize == 64 and list(cfg.optim.betas) == [0.5, 0.999]


def test_file_names_live_in_one_module():
    src = Path(__file__).resolve().parents[1] / "src" / "dlrun"
    for path in src.rglob("*.py"):
        if path.name in ("checkpoint.py", "summary.py"):
            continue
        text = path.read_text()
        for literal in ('"last.ckpt"', '"best.ckpt"', '"metrics.json"'):
            assert literal not in text, f"{path.relative_to(src)} spells {literal}; import it from the engine"
    assert os.path.basename(ckpt_io.LAST) == "last.ckpt"


def test_eval_curve_every_n_examples_and_resumed(tmp_path, fit_run):
    from dlrun.engine.eval_curve import EvalEveryNExamples, read_curve

    fit_run(tmp_path / "full", max_epochs=2, callbacks=[EvalEveryNExamples(64)])
    full = read_curve(tmp_path / "full" / "eval_curve.csv")
    assert [row[0] for row in full] == list(range(0, 2 * 256 + 1, 64))  # 256 examples an epoch
    fit_run(tmp_path / "half", max_epochs=1, callbacks=[EvalEveryNExamples(64)])
    fit_run(
        tmp_path / "rest", max_epochs=2, callbacks=[EvalEveryNExamples(64)], resume=str(tmp_path / "half")
    )
    resumed = read_curve(tmp_path / "rest" / "eval_curve.csv")
    assert [(n, loss) for n, _, loss in resumed] == [(n, loss) for n, _, loss in full]
