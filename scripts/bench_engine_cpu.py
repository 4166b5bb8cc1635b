"""CPU time per training step: a bare PyTorch loop against dlrun's Trainer, in one process, one thread.

    DLRUN_DATA_DIR=../shared/data python scripts/bench_engine_cpu.py [--steps 120] [--rounds 3]

CPU time (not wall time) of the training steps only, so load from other processes on the machine barely
moves it: what it shows is the work the engine adds per step. LeNet on Fashion-MNIST, batch 256, SGD.
"""

import argparse
import os
import tempfile
import time
from functools import partial

import torch
import torchvision
from torch.nn import functional as F

from dlrun.data.vision import TorchvisionImageData
from dlrun.engine.callbacks import Callback
from dlrun.engine.trainer import Trainer
from dlrun.loggers.tensorboard import TensorBoardLogger
from dlrun.models.lenet import LeNet
from dlrun.tasks.classification import ClassificationTask

ROOT = os.environ.get("DLRUN_DATA_DIR", "data")


def bare(x, y, steps: int) -> float:
    torch.manual_seed(0)
    model = LeNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.9)
    start = time.process_time()
    for idx in torch.randperm(len(y)).split(256)[:steps]:
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.process_time() - start) / steps * 1000


class CpuTimer(Callback):
    """CPU seconds of the training loop alone (train epoch start to end)."""

    def on_train_epoch_start(self, trainer, epoch):
        self.start = time.process_time()

    def on_train_epoch_end(self, trainer, epoch, metrics):
        self.seconds = time.process_time() - self.start


def engine(steps: int, tensorboard: bool) -> float:
    timer = CpuTimer()
    data = TorchvisionImageData("FashionMNIST", ROOT, batch_size=256, channels=1, num_classes=10, size=28)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            device="cpu",
            max_epochs=1,
            limit_train_batches=steps,
            limit_val_batches=1,
            monitor="val/acc",
            monitor_mode="max",
            checkpoint=False,
            curves=False,
            callbacks=[timer],
        )
        trainer.fit(
            LeNet(),
            ClassificationTask(),
            data,
            partial(torch.optim.SGD, lr=0.9),
            logger=TensorBoardLogger(run_dir) if tensorboard else None,
            run_dir=run_dir,
        )
    return timer.seconds / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = torchvision.datasets.FashionMNIST(ROOT, train=True)
    x = ds.data.unsqueeze(1).float().div(255)
    for r in range(args.rounds):
        print(
            f"round {r + 1}: ms CPU per step  bare {bare(x, ds.targets, args.steps):.1f}  "
            f"dlrun {engine(args.steps, False):.1f}  dlrun+tensorboard {engine(args.steps, True):.1f}"
        )


if __name__ == "__main__":
    main()
