"""The training engine, driven directly (no Hydra): resume, interruption, clipping, accumulation,
precision, NaN handling and schedulers."""

from functools import partial

import pytest
import torch
from torch import nn

from dlrun.data.fake import FakeImageData
from dlrun.engine import checkpoint as ckpt_io
from dlrun.engine.device import Precision, select_device
from dlrun.engine.seed import seed_everything
from dlrun.engine.trainer import Trainer
from dlrun.errors import DlrunError, NonFiniteLossError
from dlrun.models.mlp import MLP
from dlrun.tasks.classification import ClassificationTask

COMPARED = ("train/loss", "train/acc", "val/loss", "val/acc", "lr")


def final(summary):
    return {k: summary["final"][k] for k in COMPARED}


def step_lr(optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)


def test_resume_after_epoch_2_matches_uninterrupted_4_epochs(tmp_path, fit_run):
    full, _ = fit_run(tmp_path / "full", max_epochs=4, scheduler=step_lr)
    fit_run(tmp_path / "first", max_epochs=2, scheduler=step_lr)
    resumed, _ = fit_run(
        tmp_path / "resumed", max_epochs=4, scheduler=step_lr, resume=str(tmp_path / "first" / "last.ckpt")
    )
    assert resumed["epochs"] == 4 and resumed["global_step"] == full["global_step"]
    assert resumed["resumed_from"].endswith("last.ckpt")
    assert final(resumed) == final(full)
    assert [h["val/acc"] for h in resumed["history"]] == [h["val/acc"] for h in full["history"]]


class InterruptAt(ClassificationTask):
    """Raises KeyboardInterrupt (as Ctrl-C would) at the n-th training batch."""

    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0

    def training_step(self, model, batch):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return super().training_step(model, batch)


def test_ctrl_c_mid_epoch_leaves_a_checkpoint_that_resumes_exactly(tmp_path, fit_run):
    full, _ = fit_run(tmp_path / "full", max_epochs=3)
    with pytest.raises(KeyboardInterrupt):
        fit_run(tmp_path / "cut", max_epochs=3, task=InterruptAt(8 + 5))  # 8 batches/epoch: cut in epoch 2
    cut = ckpt_io.load(tmp_path / "cut" / "last.ckpt")
    assert cut["state"]["epoch"] == 1 and cut["state"]["batch_in_epoch"] == 4
    metrics = (tmp_path / "cut" / "metrics.json").read_text()
    assert '"status": "interrupted"' in metrics
    resumed, _ = fit_run(tmp_path / "resumed", max_epochs=3, resume=str(tmp_path / "cut"))
    assert final(resumed) == pytest.approx(final(full), rel=1e-6)


def test_resume_auto_finds_the_unfinished_run(tmp_path, fit_run):
    with pytest.raises(KeyboardInterrupt):
        fit_run(tmp_path / "runs" / "a", max_epochs=2, task=InterruptAt(10))
    summary, _ = fit_run(tmp_path / "runs" / "b", max_epochs=2, resume="auto")
    assert summary["resumed_from"] == str(tmp_path / "runs" / "a" / "last.ckpt")
    # a finished run is not picked up again
    summary, _ = fit_run(tmp_path / "runs" / "c", max_epochs=2, resume="auto")
    assert summary["resumed_from"] is None


def test_checkpoints_hold_everything_needed(tmp_path, fit_run):
    summary, _ = fit_run(tmp_path, max_epochs=2, scheduler=step_lr)
    ckpt = ckpt_io.load(tmp_path / "last.ckpt")
    assert {"model", "optimizers", "schedulers", "scaler", "state", "rng", "config"} <= set(ckpt)
    assert ckpt["state"]["epoch"] == 2 and ckpt["schedulers"]["default"]["last_epoch"] == 2
    best = ckpt_io.load(tmp_path / "best.ckpt")
    assert best["state"]["best"]["epoch"] == summary["best"]["epoch"]
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_fast_dev_run_trains_one_batch_and_writes_no_checkpoint(tmp_path, fit_run):
    summary, _ = fit_run(tmp_path, max_epochs=5, fast_dev_run=True)
    assert summary["epochs"] == 1 and summary["global_step"] == 1
    assert not (tmp_path / "last.ckpt").exists()


def test_limits_and_max_steps(tmp_path, fit_run):
    summary, _ = fit_run(tmp_path / "a", max_epochs=2, limit_train_batches=3)
    assert summary["global_step"] == 6
    summary, _ = fit_run(tmp_path / "b", max_epochs=2, limit_train_batches=0.5)
    assert summary["global_step"] == 8
    summary, _ = fit_run(tmp_path / "c", max_epochs=10, max_steps=5)
    assert summary["global_step"] == 5 and summary["epochs"] == 1


class RecordingSGD(torch.optim.SGD):
    """SGD that records the global gradient norm and the largest |gradient| it is asked to apply."""

    norms: list = []
    maxima: list = []

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        RecordingSGD.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        RecordingSGD.maxima.append(max(g.abs().max().item() for g in grads))
        return super().step(closure)


@pytest.mark.parametrize("algorithm, bound", [("norm", 0.05), ("value", 0.001)])
def test_gradient_clipping_bounds_the_gradient(tmp_path, algorithm, bound, fit_run):
    RecordingSGD.norms, RecordingSGD.maxima = [], []
    fit_run(tmp_path / "free", max_epochs=1, optimizer=partial(RecordingSGD, lr=0.5))
    unclipped = RecordingSGD.norms if algorithm == "norm" else RecordingSGD.maxima
    assert max(unclipped) > bound  # the bound really bites
    RecordingSGD.norms, RecordingSGD.maxima = [], []
    fit_run(
        tmp_path / "clipped",
        max_epochs=1,
        optimizer=partial(RecordingSGD, lr=0.5),
        gradient_clip_val=bound,
        gradient_clip_algorithm=algorithm,
    )
    clipped = RecordingSGD.norms if algorithm == "norm" else RecordingSGD.maxima
    assert max(clipped) <= bound * (1 + 1e-5)


def test_accumulating_2x128_gives_the_gradient_of_one_256_batch(tmp_path, fit_run):
    def weights_after_one_step(batch_size, accumulate):
        _, trainer = fit_run(
            tmp_path / f"b{batch_size}",
            dropout=(),
            num_train=256,
            batch_size=batch_size,
            max_epochs=1,
            max_steps=1,
            accumulate_grad_batches=accumulate,
        )
        return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])

    once = weights_after_one_step(256, 1)
    accumulated = weights_after_one_step(128, 2)
    unaccumulated = weights_after_one_step(128, 1)  # one step on half the batch: must differ
    torch.testing.assert_close(accumulated, once, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(unaccumulated, once, rtol=1e-5, atol=1e-6)


class DtypeSpy(ClassificationTask):
    dtypes: list = []

    def training_step(self, model, batch):
        DtypeSpy.dtypes.append(model(batch[0]).dtype)
        return super().training_step(model, batch)


def test_bf16_mixed_autocasts_on_cpu_and_trains(tmp_path, fit_run):
    DtypeSpy.dtypes = []
    summary, _ = fit_run(tmp_path, max_epochs=4, precision="bf16-mixed", task=DtypeSpy())
    assert set(DtypeSpy.dtypes) == {torch.bfloat16}
    assert summary["final"]["val/acc"] > 0.3  # chance is 0.1
    for p in ckpt_io.load(tmp_path / "last.ckpt")["model"].values():
        assert p.dtype == torch.float32  # the weights stay fp32


def test_precision_and_device_errors_are_clear(monkeypatch):
    with pytest.raises(DlrunError, match="16-mixed needs a CUDA device"):
        Precision("16-mixed", torch.device("cpu"))
    with pytest.raises(DlrunError, match="use one of 32, bf16-mixed, 16-mixed"):
        Precision("8-bit", torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(DlrunError, match="CUDA is not available"):
        select_device("cuda:0")
    with pytest.raises(DlrunError, match="not a device"):
        select_device("gpu0")


class NaNAt(ClassificationTask):
    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0

    def training_step(self, model, batch):
        self.calls += 1
        loss, stats, count = super().training_step(model, batch)
        return (loss * float("nan") if self.calls >= self.n else loss), stats, count


def test_nan_loss_stops_with_step_and_last_good_loss_and_keeps_last_ckpt(tmp_path, fit_run):
    with pytest.raises(
        NonFiniteLossError, match=r"became nan at step 11 \(epoch 2\); last finite loss [0-9.]+ at step 10"
    ):
        fit_run(tmp_path, max_epochs=3, task=NaNAt(11), log_every_n_steps=4)
    kept = ckpt_io.load(tmp_path / "last.ckpt")
    assert kept["state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values())
    assert '"status": "failed: non-finite loss"' in (tmp_path / "metrics.json").read_text()


def test_scheduler_steps_per_epoch_or_per_step(tmp_path, fit_run):
    per_epoch, _ = fit_run(tmp_path / "e", max_epochs=3, scheduler=step_lr, interval="epoch")
    assert [h["lr"] for h in per_epoch["history"]] == [0.5, 0.25, 0.125]
    per_step, _ = fit_run(tmp_path / "s", max_epochs=2, scheduler=step_lr, interval="step")
    assert [h["lr"] for h in per_step["history"]] == [0.5, 0.5 * 0.5**8]


def test_linear_warmup_ramps_then_decays():
    from dlrun.engine.schedulers import linear_warmup

    opt = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    sched = linear_warmup(
        opt, partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=4), warmup=2, start_factor=0.1
    )
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[1] < lrs[2] == pytest.approx(1.0)
    assert lrs[2] > lrs[3] > lrs[4] > lrs[5]


def test_same_seed_same_run_different_seed_different_run(tmp_path, fit_run):
    a, _ = fit_run(tmp_path / "a", max_epochs=1)
    b, _ = fit_run(tmp_path / "b", max_epochs=1)
    assert final(a) == final(b)
    seed_everything(1)
    data = FakeImageData(batch_size=32, num_train=256, num_val=64, size=8)
    trainer = Trainer(device="cpu", progress_bar=False, max_epochs=1, monitor="val/acc", monitor_mode="max")
    model = MLP(image_size=8, hidden_sizes=[32, 32], dropout=[0.2, 0.5], init="xavier")
    c = trainer.fit(
        model, ClassificationTask(), data, partial(torch.optim.SGD, lr=0.5), run_dir=tmp_path / "c", seed=1
    )
    assert final(c) != final(a)


def test_deterministic_mode_runs(tmp_path, fit_run):
    try:
        summary, _ = fit_run(tmp_path, max_epochs=1, deterministic=True)
    finally:
        torch.use_deterministic_algorithms(False)
    assert summary["status"] == "completed"


class HookRecorder(ClassificationTask):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_epoch_start(self, model, ctx):
        self.calls.append(("train_start", model.training))

    def on_validation_start(self, model, ctx):
        self.calls.append(("val_start", model.training))

    def on_epoch_end(self, model, ctx):
        self.calls.append(("epoch_end", ctx.epoch))

    def on_fit_end(self, model, ctx):
        self.calls.append(("fit_end", ctx.run_dir))


def test_task_hooks_are_called_in_order(tmp_path, fit_run):
    task = HookRecorder()
    fit_run(tmp_path, max_epochs=2, task=task)
    assert task.calls == [
        ("train_start", True),
        ("val_start", False),
        ("epoch_end", 1),
        ("train_start", True),
        ("val_start", False),
        ("epoch_end", 2),
        ("fit_end", tmp_path),
    ]


class RecordCheckpoints(ClassificationTask):
    """Notes, at each epoch's end, which epoch last.ckpt on disk holds (written after this hook)."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir, self.seen = run_dir, []

    def on_epoch_end(self, model, ctx):
        last = self.run_dir / "last.ckpt"
        self.seen.append(ckpt_io.load(last)["state"]["epoch"] if last.is_file() else None)


def test_checkpoint_every_n_epochs_still_keeps_the_best_epoch(tmp_path, fit_run):
    task = RecordCheckpoints(tmp_path)
    # The monitor is the lr, which StepLR halves every epoch: epoch 1 is the best, and not checkpointed.
    fit_run(
        tmp_path,
        task=task,
        max_epochs=5,
        scheduler=step_lr,
        monitor="lr",
        monitor_mode="max",
        checkpoint_every_n_epochs=3,
    )
    assert task.seen == [None, None, None, 3, 3]  # written after epoch 3, then at the end (epoch 5)
    assert ckpt_io.load(tmp_path / "last.ckpt")["state"]["epoch"] == 5
    best = ckpt_io.load(tmp_path / "best.ckpt")
    assert best["state"]["epoch"] == 1 and best["state"]["best"]["lr"] == 0.5
    with pytest.raises(DlrunError, match="checkpoint_every_n_epochs=0"):
        Trainer(device="cpu", checkpoint_every_n_epochs=0)


def test_replacing_keeps_the_old_file_when_writing_fails(tmp_path):
    from dlrun.atomic import replacing

    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    with replacing(path, ".png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_text("new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
