"""Resume and interruption you can trust: signals, kill -9 chains, locks, refused resumes, clear messages."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import run_cli

from dlrun.data.fake import FakeImageData
from dlrun.engine import checkpoint as ckpt_io
from dlrun.engine.checkpoint import RunLock, find_resumable
from dlrun.engine.trainer import Trainer
from dlrun.errors import DlrunError
from dlrun.models.mlp import MLP
from dlrun.tasks.classification import ClassificationTask

SMOKE = ["experiment=smoke", "logger=none", "trainer.progress_bar=false"]


def numbers(history):
    return [{k: v for k, v in h.items() if not k.startswith(("time/", "throughput/"))} for h in history]


class SignalAt(ClassificationTask):
    """Sends this process `signum` during the n-th training batch, after the forward pass has drawn its
    dropout masks: the stop must wait for the step to end, and the checkpoint must match that moment."""

    def __init__(self, n, signum=signal.SIGINT):
        super().__init__()
        self.n, self.signum, self.calls = n, signum, 0

    def training_step(self, model, batch):
        self.calls += 1
        out = super().training_step(model, batch)
        if self.calls == self.n:
            os.kill(os.getpid(), self.signum)
        return out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_mid_epoch_resumes_exactly_with_dropout(tmp_path, fit_run, signum):
    full, _ = fit_run(tmp_path / "full", max_epochs=3)
    with pytest.raises(KeyboardInterrupt):
        fit_run(tmp_path / "cut", max_epochs=3, task=SignalAt(8 + 5, signum))  # 8 batches/epoch
    cut = ckpt_io.load(tmp_path / "cut" / "last.ckpt")
    assert (cut["state"]["epoch"], cut["state"]["batch_in_epoch"]) == (1, 5)  # the step that was running
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["status"] == "interrupted"
    resumed, _ = fit_run(tmp_path / "resumed", max_epochs=3, resume=str(tmp_path / "cut"))
    assert numbers(resumed["history"]) == numbers(full["history"])


def test_bad_trainer_values_are_refused_with_the_key(tmp_path):
    cases = {
        "gradient_clip_val=-1": dict(gradient_clip_val=-1),
        "gradient_clip_val=0": dict(gradient_clip_val=0),
        "limit_train_batches=0 must be >= 1": dict(limit_train_batches=0),
        "limit_train_batches=-1": dict(limit_train_batches=-1),
        "limit_train_batches=1.5 as a fraction": dict(limit_train_batches=1.5),
        "max_epochs=1.5 must be a whole number": dict(max_epochs=1.5),
    }
    for message, kwargs in cases.items():
        with pytest.raises(DlrunError, match="trainer." + message.replace(".", r"\.")):
            Trainer(device="cpu", **kwargs)


def test_data_with_inf_is_refused_when_it_loads():
    data = FakeImageData(batch_size=8, num_train=16, num_val=8, size=4)
    data.x_train = data.x_train.float()
    data.x_train[3, 0, 0, 0] = float("inf")
    with pytest.raises(DlrunError, match="x_train holds 1 non-finite value.*float32's range"):
        data.setup(torch.device("cpu"))


def test_a_run_that_raises_is_marked_failed(tmp_path, fit_run):
    class Broken(ClassificationTask):
        def training_step(self, model, batch):
            raise RuntimeError("boom\nsecond line")

    with pytest.raises(RuntimeError):
        fit_run(tmp_path, max_epochs=1, task=Broken())
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed: RuntimeError: boom"


def test_metrics_json_says_running_from_the_start(tmp_path, fit_run):
    class Peek(ClassificationTask):
        seen = None

        def training_step(self, model, batch):
            if Peek.seen is None:
                Peek.seen = json.loads((tmp_path / "metrics.json").read_text())
            return super().training_step(model, batch)

    fit_run(tmp_path / "a", max_epochs=1)
    fit_run(tmp_path, max_epochs=1, task=Peek(), resume=str(tmp_path / "a"))
    assert Peek.seen is None  # already complete: nothing trained, nothing written
    assert not (tmp_path / "metrics.json").exists()
    fit_run(tmp_path, max_epochs=2, task=Peek(), resume=str(tmp_path / "a"))
    assert Peek.seen["status"] == "running" and Peek.seen["resumed_from"].endswith("last.ckpt")


def test_unreadable_metrics_json_does_not_block_resume_auto(tmp_path, caplog):
    for name, text in (("empty", ""), ("list", "[1, 2]"), ("good", '{"status": "interrupted"}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(text)
        (tmp_path / name / "last.ckpt").write_bytes(b"x")
        time.sleep(0.01)
    assert find_resumable(tmp_path / "new", tmp_path) == tmp_path / "good" / "last.ckpt"
    assert "empty/metrics.json is unreadable" in caplog.text and "holds a JSON list" in caplog.text


def test_a_run_dir_is_locked_while_in_use(tmp_path):
    first, second = RunLock(), RunLock()
    first.acquire(tmp_path, "test")
    with pytest.raises(DlrunError, match=f"{tmp_path} is in use by pid {os.getpid()}"):
        second.acquire(tmp_path, "test")
    assert ckpt_io.is_locked(tmp_path)
    first.release()
    second.acquire(tmp_path, "test")
    second.release()


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path, fit_run):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".last.ckpt.{dead.stdout.strip()}.tmp"
    stale.write_bytes(b"half a checkpoint")
    fit_run(tmp_path, max_epochs=1)
    assert not stale.exists()


def test_foreign_files_and_mismatched_weights_get_one_clear_line(tmp_path):
    png = tmp_path / "curves.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DlrunError) as err:
        ckpt_io.load(png)
    assert "could not be read" in str(err.value) and "weights_only" not in str(err.value)
    jsonfile = tmp_path / "m.json"
    jsonfile.write_text("{}")
    with pytest.raises(DlrunError, match="could not be read"):
        ckpt_io.load(jsonfile)
    small = MLP(image_size=8, hidden_sizes=[16], dropout=[], init="xavier")
    big = MLP(image_size=8, hidden_sizes=[32], dropout=[], init="xavier")
    with pytest.raises(DlrunError, match=r"does not fit this model: \S+weight has shape \(32, 64\) there"):
        ckpt_io.load_model_weights(small, big.state_dict(), tmp_path / "x.ckpt", "hint")


def wait_for(path, timeout=120):
    end = time.time() + timeout
    while not path.is_file():
        if time.time() > end:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def test_kill_9_chain_then_resume_auto_continues_the_end_of_the_chain(tmp_path):
    """Kill -9 two runs in a chain of resume=auto runs; the third finishes where an uninterrupted run would,
    and a fourth starts fresh instead of going back to the first run's checkpoint."""
    args = [*SMOKE, "trainer.max_epochs=6", "trainer.resume=auto", f"paths.output_root={tmp_path / 'out'}"]
    runs = tmp_path / "out" / "smoke"
    for _ in range(2):
        before = set(runs.glob("*")) if runs.is_dir() else set()
        proc = subprocess.Popen(
            [sys.executable, "-m", "dlrun", *args],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while True:  # this run's own first checkpoint
            mine = [
                d
                for d in (set(runs.glob("*")) if runs.is_dir() else set()) - before
                if (d / "last.ckpt").is_file()
            ]
            if mine or proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    third = run_cli(args, tmp_path)
    assert "resumed from" in third.stderr
    full = run_cli([*SMOKE, "trainer.max_epochs=6", f"hydra.run.dir={tmp_path / 'full'}"], tmp_path)
    assert full.returncode == 0
    by_time = sorted(runs.iterdir(), key=lambda d: d.name)
    finished = json.loads((by_time[-1] / "metrics.json").read_text())
    reference = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert finished["status"] == "completed"
    assert numbers(finished["history"][-1:]) == numbers(reference["history"][-1:])
    fourth = run_cli(args, tmp_path)
    assert "no unfinished run found, starting fresh" in fourth.stderr
    assert json.loads((by_time[0] / "metrics.json").read_text())["status"] == "killed"
    assert not list(runs.glob("*/.*.tmp*"))


def test_resume_refuses_a_changed_config_and_a_finished_run_says_so(tmp_path):
    first = tmp_path / "first"
    run_cli([*SMOKE, "trainer.max_epochs=1", f"hydra.run.dir={first}"], tmp_path)
    changed = run_cli(
        [
            *SMOKE,
            "trainer.max_epochs=2",
            "optim.lr=0.7",
            f"trainer.resume={first}",
            f"hydra.run.dir={tmp_path / 'b'}",
        ],
        tmp_path,
        check=False,
    )
    assert changed.returncode == 2
    assert "was trained with another config: optim.lr (0.1 -> 0.7)" in changed.stderr
    assert "'trainer.allow_config_changes=[optim.lr]'" in changed.stderr
    allowed = run_cli(
        [
            *SMOKE,
            "trainer.max_epochs=2",
            "optim.lr=0.7",
            f"trainer.resume={first}",
            "trainer.allow_config_changes=[optim.lr]",
            f"hydra.run.dir={tmp_path / 'c'}",
        ],
        tmp_path,
    )
    assert "resumed from" in allowed.stderr
    done = run_cli(
        [*SMOKE, "trainer.max_epochs=1", f"trainer.resume={first}", f"hydra.run.dir={tmp_path / 'd'}"],
        tmp_path,
    )
    assert "already complete at epoch 1" in done.stderr and not (tmp_path / "d" / "metrics.json").exists()


def test_a_bad_job_fails_alone_in_a_sweep(tmp_path):
    proc = run_cli(
        [
            "-m",
            *SMOKE,
            "trainer.max_epochs=1",
            "data.batch_size=64,0,32",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        tmp_path,
    )
    rows = (tmp_path / "sweep" / "summary.csv").read_text().splitlines()
    assert len(rows) == 4, proc.stderr
    statuses = [
        json.loads((tmp_path / "sweep" / str(j) / "metrics.json").read_text())["status"] for j in range(3)
    ]
    assert statuses[0] == statuses[2] == "completed"
    assert statuses[1].startswith("failed: ") and "batch_size=0" in statuses[1]


def test_sigterm_to_the_cli_saves_and_exits_143(tmp_path):
    run_dir = tmp_path / "my run"  # the printed resume hint must survive the space
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun", *SMOKE, "trainer.max_epochs=200", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(run_dir / "last.ckpt")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"resume with 'trainer.resume={run_dir}/last.ckpt'" in err
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    ckpt_io.load(run_dir / "last.ckpt")


def test_a_slurm_warning_saves_then_hands_the_signal_to_submitit(tmp_path, fit_run):
    """submitit requeues a job from its own SIGUSR2 handler and exits: dlrun must save first, then call it."""
    seen = []

    def submitit_requeue(signum, frame):
        seen.append((signum, (tmp_path / "cut" / "last.ckpt").is_file()))

    previous = signal.signal(signal.SIGUSR2, submitit_requeue)
    try:
        with pytest.raises(KeyboardInterrupt):
            fit_run(tmp_path / "cut", max_epochs=3, task=SignalAt(5, signal.SIGUSR2))
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [(signal.SIGUSR2, True)]


def test_a_requeued_slurm_job_continues_its_own_checkpoint(tmp_path, fit_run, monkeypatch):
    fit_run(tmp_path, max_epochs=1)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    summary, _ = fit_run(tmp_path, max_epochs=2)  # no trainer.resume given
    assert summary["resumed_from"] == str(tmp_path / "last.ckpt") and summary["epochs"] == 2


def test_a_binary_csv_and_a_huge_message_are_cut_to_one_short_line(tmp_path):
    from dlrun.data.tabular import read_csv
    from dlrun.errors import first_line, shorten

    blob = tmp_path / "data.csv"
    blob.write_bytes(bytes(range(256)) * 60)  # 15 KB of binary
    with pytest.raises(DlrunError, match="is not a UTF-8 text CSV") as err:
        read_csv(blob)
    assert len(str(err.value)) < 300
    assert len(first_line(ValueError("x" * 15000))) < 400
    assert shorten("y" * 1000, 50).endswith("(950 more characters)")
