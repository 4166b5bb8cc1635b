"""Engine overhead, measured: a bare PyTorch loop, the book's loop and dlrun's engine, same model and data.

    DLRUN_DATA_DIR=../shared/data python scripts/bench.py            # writes docs/performance.md
    python scripts/bench.py --variant bare --model lenet --steps 300   # one measurement, JSON on stdout

Every variant runs in its own process (so peak memory is its own) with the same torch thread count, trains
the same model with SGD for the same number of steps on Fashion-MNIST, and reports train examples/s (after one
warm-up step), time from process start to the end of the first optimizer step, and peak resident memory.
"""

import time

PROCESS_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {  # model: (image size, batch size, lr, steps)
    "lenet": (28, 256, 0.9, 300),
    "resnet18": (96, 128, 0.05, 15),
}
VARIANTS = ("bare", "book", "dlrun")


def data_root() -> str:
    return os.environ.get("DLRUN_DATA_DIR", "data")


def build_model(name: str) -> nn.Module:
    if name == "lenet":
        from dlrun.models.lenet import LeNet

        return LeNet()
    from dlrun.models.resnet import ResNet

    return ResNet(stages=[2, 2, 2, 2])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare(model_name: str, steps: int) -> dict:
    """Tensors in memory, indexed batches, no logging: the floor."""
    import torchvision

    size, batch, lr, _ = SETTINGS[model_name]
    ds = torchvision.datasets.FashionMNIST(data_root(), train=True)
    x = ds.data.unsqueeze(1).float().div_(255)
    if size != 28:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    y = ds.targets
    torch.manual_seed(0)
    model = build_model(model_name)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    perm = torch.randperm(len(y))
    first_step = timed = None
    for step in range(steps + 1):
        idx = perm[step * batch : (step + 1) * batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0:
            first_step = time.perf_counter() - PROCESS_START
            timed = time.perf_counter()
    return {"examples_per_s": steps * batch / (time.perf_counter() - timed), "first_step_s": first_step}


def book(model_name: str, steps: int) -> dict:
    """The book's train_ch6: torchvision dataset + ToTensor (+ Resize) + DataLoader(4 workers), a float()
    sync per batch for its Accumulator."""
    import torchvision
    from torchvision import transforms

    size, batch, lr, _ = SETTINGS[model_name]
    trans = [transforms.ToTensor()]
    if size != 28:
        trans.insert(0, transforms.Resize(size))
    ds = torchvision.datasets.FashionMNIST(data_root(), train=True, transform=transforms.Compose(trans))
    loader = torch.utils.data.DataLoader(ds, batch, shuffle=True, num_workers=4)
    torch.manual_seed(0)
    model = build_model(model_name)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    metric = [0.0, 0.0, 0]
    first_step = timed = None
    step = 0
    while step <= steps:
        for X, y in loader:
            y_hat = model(X)
            loss = loss_fn(y_hat, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            metric[0] += float(loss) * X.shape[0]
            metric[1] += float((y_hat.argmax(1) == y).sum())
            metric[2] += X.shape[0]
            if step == 0:
                first_step = time.perf_counter() - PROCESS_START
                timed = time.perf_counter()
            step += 1
            if step > steps:
                break
    return {"examples_per_s": steps * batch / (time.perf_counter() - timed), "first_step_s": first_step}


def dlrun(model_name: str, steps: int) -> dict:
    """dlrun's engine with its defaults: TensorBoard logger, progress, checkpoint at the end of the run."""
    from dlrun.data.vision import TorchvisionImageData
    from dlrun.engine.trainer import Trainer
    from dlrun.loggers.tensorboard import TensorBoardLogger
    from dlrun.tasks.classification import ClassificationTask

    size, batch, lr, _ = SETTINGS[model_name]
    first = {}

    class FirstStepClock(ClassificationTask):
        calls = 0

        def training_step(self, model, b):
            # called before step k+1's forward: the clock covers step 0 and excludes it from the throughput
            FirstStepClock.calls += 1
            if FirstStepClock.calls == 2:
                first["first_step_s"] = time.perf_counter() - PROCESS_START
                first["timed"] = time.perf_counter()
            return super().training_step(model, b)

    data = TorchvisionImageData(
        "FashionMNIST",
        data_root(),
        batch_size=batch,
        channels=1,
        num_classes=10,
        size=28,
        resize=None if size == 28 else size,
    )
    torch.manual_seed(0)
    model = build_model(model_name)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            device="cpu",
            max_epochs=1,
            limit_train_batches=steps + 1,
            limit_val_batches=1,
            monitor="val/acc",
            monitor_mode="max",
        )
        trainer._train_epoch = _timed(trainer._train_epoch, first)
        trainer.fit(
            model,
            FirstStepClock(),
            data,
            partial(torch.optim.SGD, lr=lr),
            logger=TensorBoardLogger(run_dir),
            run_dir=run_dir,
        )
    return {
        "examples_per_s": steps * batch / (first["end"] - first["timed"]),
        "first_step_s": first["first_step_s"],
    }


def _timed(train_epoch, clock):
    def wrapper(epoch):
        out = train_epoch(epoch)
        clock["end"] = time.perf_counter()
        return out

    return wrapper


def measure(variant: str, model: str, steps: int) -> dict:
    result = globals()[variant](model, steps)
    return result | {"peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads()}


def run_all(steps_scale: float) -> list[dict]:
    rows = []
    for model, (_, batch, _, steps) in SETTINGS.items():
        steps = max(3, int(steps * steps_scale))
        for variant in VARIANTS:
            proc = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--model", model, "--steps", str(steps)],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if proc.returncode != 0:
                raise SystemExit(f"{variant}/{model} failed:\n{proc.stderr}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"model": model, "variant": variant, "steps": steps, "batch": batch} | result)
            print(rows[-1], file=sys.stderr)
    return rows


def write_markdown(rows: list[dict], path: Path, command: str) -> None:
    lines = [
        "# Performance: dlrun's engine against plain PyTorch loops",
        "",
        f"Measured with `{command}` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {rows[0]['threads']} threads, no GPU.",
        "",
        "| model | loop | steps × batch | examples/s | × bare | × book | first step (s) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in SETTINGS:
        by = {r["variant"]: r for r in rows if r["model"] == model}
        for variant, r in by.items():
            ratio = r["examples_per_s"] / by["bare"]["examples_per_s"]
            vs_book = r["examples_per_s"] / by["book"]["examples_per_s"]
            lines.append(
                f"| {model} | {variant} | {r['steps']} × {r['batch']} | {r['examples_per_s']:,.0f} | "
                f"{ratio:.2f} | {vs_book:.2f} | {r['first_step_s']:.1f} | {r['peak_rss_mb']:,.0f} |"
            )
    lines += [
        "",
        "Loops: **bare** = tensors in memory, indexed batches, no logging; **book** = the book's "
        "`train_ch6`: torchvision dataset with `ToTensor` (and `Resize`), `DataLoader(num_workers=4)`, a "
        "`float()` per batch for its metrics; **dlrun** = `Trainer` with TensorBoard logging, progress "
        "output and a checkpoint. "
        "examples/s excludes the first step; *first step* counts from process start (imports and data "
        "loading included).",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", choices=VARIANTS)
    parser.add_argument("--model", choices=list(SETTINGS), default="lenet")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every default step count")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.model, args.steps or SETTINGS[args.model][3])))
        return
    rows = run_all(args.scale)
    write_markdown(
        rows, args.out, "python " + " ".join([Path(__file__).relative_to(ROOT).as_posix(), *sys.argv[1:]])
    )
    print(args.out.read_text())


if __name__ == "__main__":
    main()
