"""Data parallel under torchrun (trainer.strategy=ddp): two gloo processes on the CPU train exactly as one
process with the same global batch, only rank 0 writes, every rank names one run directory, resume works."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlrun import resolvers
from dlrun.data.fake import FakeImageData
from dlrun.data.sampling import EpochBatchSampler
from dlrun.engine import checkpoint as ckpt_io
from dlrun.engine import distributed
from dlrun.errors import DlrunError

# 66 training examples in global batches of 16: four full batches and a short one of 2 (one example per rank);
# 33 validation examples in batches of 16: rank 0 gets 3 batches, rank 1 two (its last share is empty).
RUN = [
    "name=ddp",
    "data=fake",
    "data.num_train=66",
    "data.num_val=33",
    "data.size=8",
    "data.batch_size=16",
    "model=mlp",
    "model.hidden_sizes=[16]",
    "model.init=xavier",
    "optim.lr=0.2",
    "optim.momentum=0.9",  # optimizer state: a rank that did not load it on resume would diverge
    "trainer.device=cpu",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=2",
    "trainer.accumulate_grad_batches=2",  # DDP's no_sync on the first micro-batch, all-reduce on the second
    "seed=0",
]
COMPARED = ("train/loss", "train/acc", "val/loss", "val/acc")


# ------------------------------------------------------------------------------------ sampler
def batches(n, batch_size, shuffle, world_size, rank, **kwargs):
    sampler = EpochBatchSampler(
        n, batch_size, shuffle, seed=3, epoch=1, rank=rank, world_size=world_size, **kwargs
    )
    out = list(sampler)
    assert len(out) == len(sampler)
    return out


@pytest.mark.parametrize("n", [66, 64, 16])
def test_ranks_split_each_global_batch_of_a_single_process(n):
    whole = batches(n, 16, True, 1, 0)
    ranks = [batches(n, 16, True, 2, r) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(whole)
    for single, r0, r1 in zip(whole, *ranks, strict=True):
        assert len(r0) == len(r1) == len(single) // 2  # equal shares: the mean of means is the global mean
        assert sorted(torch.cat([r0, r1]).tolist()) == sorted(single.tolist())


def test_uneven_epochs_pad_training_and_not_validation():
    # 67 examples on 2 ranks: training repeats one example so both ranks step equally often
    ranks = [batches(67, 16, True, 2, r) for r in (0, 1)]
    assert [len(b) for b in ranks[0]] == [len(b) for b in ranks[1]] == [8, 8, 8, 8, 2]
    seen = torch.cat([torch.cat(b) for b in ranks])
    assert len(seen) == 68 and set(seen.tolist()) == set(range(67))
    # validation order: every example exactly once, rank 1 may get a batch fewer
    val = [batches(33, 16, False, 2, r) for r in (0, 1)]
    assert [len(v) for v in val] == [3, 2]
    assert sorted(torch.cat([torch.cat(v) for v in val]).tolist()) == list(range(33))
    # a global batch the ranks cannot share equally is refused for training
    with pytest.raises(ValueError, match="not divisible"):
        EpochBatchSampler(66, 15, True, world_size=2)
    data = FakeImageData(batch_size=15, num_train=30, num_val=10, size=8)
    with pytest.raises(DlrunError, match="global batch"):
        distributed.Distributed(0, 0, 2, "gloo").setup_data(data, torch.device("cpu"), seed=0)


# ------------------------------------------------------------------------------ strategy, stamp
def test_strategy_resolution_and_errors(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    state, device = distributed.setup("auto", "auto", "cpu")
    assert state is distributed.SINGLE and not state.ddp and device == torch.device("cpu")
    assert not torch.distributed.is_initialized()  # the single-process path never builds a process group
    with pytest.raises(DlrunError, match="needs the processes torchrun starts"):
        distributed.setup("ddp", "auto", "cpu")
    with pytest.raises(DlrunError, match="strategy='dp' is unknown"):
        distributed.setup("dp")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DlrunError, match="each would train alone"):
        distributed.setup("single", "auto", "cpu")

    class NoRanks:
        def setup(self, device, seed=0):
            pass

    rank1 = distributed.Distributed(rank=1, world_size=2, backend="gloo")
    with pytest.raises(DlrunError, match="takes no rank/world_size"):
        rank1.setup_data(NoRanks(), "cpu", 0)
    with pytest.raises(DlrunError, match="global batch"):  # any data module with a batch_size
        rank1.setup_data(FakeImageData(batch_size=15, num_train=30, num_val=10, size=8), "cpu", 0)


def test_every_rank_takes_rank_0s_run_stamp(monkeypatch):
    store = torch.distributed.HashStore()
    monkeypatch.setattr(distributed, "_STORE", (store, 0, 2))
    assert distributed.shared_run_stamp((1.5, "aaaa")) == (1.5, "aaaa")
    monkeypatch.setattr(distributed, "_STORE", (store, 1, 2))  # a later rank with its own clock and id
    assert distributed.shared_run_stamp((2.5, "bbbb")) == (1.5, "aaaa")
    monkeypatch.setenv("RANK", "1")
    assert resolvers._rank_zero("INFO", "WARNING") == "WARNING"
    monkeypatch.setenv("RANK", "0")
    assert resolvers._rank_zero(".hydra", None) == ".hydra"


# --------------------------------------------------------------------------------- torchrun
def torchrun(args, cwd):
    """`torchrun --standalone --nproc_per_node=2 -m dlrun ARGS` (a free port, one thread per process)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    env |= {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dlrun"]
    proc = subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        raise AssertionError(f"torchrun exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def single_run(compose_cfg, overrides, out: Path) -> Path:
    """The same config in this process (no torchrun), written to `out`."""
    from dlrun.run import run

    run(compose_cfg(overrides, output_dir=out))
    return out


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return ckpt_io.load(run_dir / "last.ckpt")["model"]


def history(run_dir: Path) -> list[dict]:
    import json

    return [
        {k: h[k] for k in COMPARED} for h in json.loads((run_dir / "metrics.json").read_text())["history"]
    ]


def test_two_gloo_processes_train_as_one_with_the_same_global_batch(tmp_path, compose_cfg):
    work = tmp_path / "work"
    work.mkdir()
    proc = torchrun([*RUN, "trainer.max_epochs=2", "trainer.strategy=ddp"], work)
    runs = list((work / "outputs" / "ddp").iterdir())
    assert len(runs) == 1, runs  # every rank named the same run directory
    ddp = runs[0]
    assert sorted(p.name for p in work.iterdir()) == ["outputs"]
    files = sorted(p.name for p in ddp.iterdir())
    events = [f for f in files if f.startswith("events.out.tfevents")]
    assert len(events) == 1  # one TensorBoard writer: rank 0's
    assert sorted(set(files) - set(events)) == [
        ".hydra",
        ".lock",
        "best.ckpt",
        "config_tree.txt",
        "confusion_matrix.csv",  # rank 0's shard of the last validation
        "confusion_matrix.png",
        "curves.png",
        "dlrun.log",
        "last.ckpt",
        "metrics.json",
    ]
    log_text = (ddp / "dlrun.log").read_text()
    assert log_text.count("epoch 1/2 |") == 1 and proc.stderr.count("epoch 1/2 |") == 1  # rank 0 alone logs
    assert "DDP: 2 processes, backend gloo" in log_text
    assert all(not k.startswith("module.") for k in weights(ddp))  # the unwrapped model's state_dict

    single = single_run(compose_cfg, [*RUN, "trainer.max_epochs=2", "logger=none"], tmp_path / "single2")
    for name, value in weights(single).items():
        torch.testing.assert_close(weights(ddp)[name], value, rtol=1e-5, atol=1e-6)
    for got, want in zip(history(ddp), history(single), strict=True):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)

    # resume under DDP: both ranks load epoch 2's weights and momentum, then match 3 uninterrupted epochs
    resume = [f"trainer.resume={ddp}", "logger=none", "trainer.curves=false"]  # fewer imports: faster
    torchrun([*RUN, "trainer.max_epochs=3", *resume], work)  # strategy=auto: ddp under torchrun
    resumed = next(p for p in (work / "outputs" / "ddp").iterdir() if p != ddp)
    single = single_run(compose_cfg, [*RUN, "trainer.max_epochs=3", "logger=none"], tmp_path / "single3")
    for name, value in weights(single).items():
        torch.testing.assert_close(weights(resumed)[name], value, rtol=1e-5, atol=1e-6)
    assert history(resumed)[-1] == pytest.approx(history(single)[-1], rel=1e-5, abs=1e-6)
    assert "resumed from" in (resumed / "dlrun.log").read_text()


READ_SUMS = """
import json, sys, torch, torch.distributed as dist
from dlrun.engine.distributed import Distributed
from dlrun.engine.metrics import MetricSums
rank, store = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
sums = MetricSums()
if rank == 0:  # rank 1 had no batches: its sums have no names at all
    sums.add({"loss": torch.tensor(3.0), "correct": torch.tensor(2)}, 4)
print(json.dumps(Distributed(rank, rank, 2, "gloo").read_sums(sums)))
dist.barrier()  # neither process leaves while the other still talks to it
dist.destroy_process_group()
"""


def test_read_sums_agrees_on_names_when_a_rank_had_no_batches(tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", READ_SUMS]
    procs = [
        subprocess.Popen([*cmd, str(r), str(tmp_path / "store")], stdout=subprocess.PIPE, text=True, env=env)
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    for out in outs:
        assert json.loads(out.strip().splitlines()[-1]) == [{"correct": 2.0, "loss": 3.0}, 4]


NAN_ON_RANK_1 = """
import os, sys
from functools import partial
import torch
from dlrun.data.fake import FakeImageData
from dlrun.engine.trainer import Trainer
from dlrun.errors import NonFiniteLossError
from dlrun.models.mlp import MLP
from dlrun.tasks.classification import ClassificationTask

class NanOnRank1(ClassificationTask):
    calls = 0
    def training_step(self, model, batch):
        loss, stats, n = super().training_step(model, batch)
        NanOnRank1.calls += 1
        if os.environ["RANK"] == "1" and NanOnRank1.calls == 4:  # the last step before a check
            loss = loss * float("nan")
        return loss, stats, n

torch.manual_seed(0)
trainer = Trainer(device="cpu", strategy="ddp", progress_bar=False, log_every_n_steps=4, curves=False)
try:
    trainer.fit(MLP(image_size=8, hidden_sizes=[8]), NanOnRank1(), FakeImageData(batch_size=8, num_train=64,
                num_val=8, size=8), partial(torch.optim.SGD, lr=0.1), run_dir=sys.argv[1])
except NonFiniteLossError as err:
    print("stopped:", err, flush=True)
torch.distributed.barrier()  # neither process leaves while the other still talks to it
torch.distributed.destroy_process_group()
"""


def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", NAN_ON_RANK_1, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env | {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2"},
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "stopped: the training loss of another process became non-finite by step 4" in outs[0][0]
    assert "stopped: training loss became nan at step 4" in outs[1][0]
