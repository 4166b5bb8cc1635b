"""Engine overhead, measured: a bare PyTorch loop, the book's loop and dlrun's engine, same model and data.

    DLRUN_DATA_DIR=../shared/data python scripts/bench.py            # writes docs/performance.md
    python scripts/bench.py --variant bare --model lenet --steps 300   # one measurement, JSON on stdout

Every variant runs in its own process (so peak memory is its own) with the same torch thread count, trains
the same model with SGD for the same number of steps on Fashion-MNIST, and reports train examples/s (after one
warm-up step), time from process start to the end of the first optimizer step, and peak resident memory.
"""

import time
import warnings

PROCESS_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
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

from dlrun.markers import write_between  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {  # model: (image size, batch size, lr, steps)
    "lenet": (28, 256, 0.9, 300),
    "resnet18": (96, 128, 0.05, 10),
}
# dlrun's engine with its defaults, then with one trainer option switched on.
DLRUN_OPTIONS = {
    "dlrun": {},
    "dlrun+channels_last": {"channels_last": True},
    "dlrun+compile": {"compile": True},
    "dlrun+matmul_medium": {"matmul_precision": "medium"},
}
VARIANTS = ("bare", "book", *DLRUN_OPTIONS, "lightning")


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
    batches_per_epoch = math.ceil(len(y) / batch)
    first_step = timed = None
    examples = 0
    for step in range(steps + 1):
        b = step % batches_per_epoch
        if b == 0:  # a new epoch: reshuffle (the last batch of an epoch is short, as in the other loops)
            perm = torch.randperm(len(y))
        idx = perm[b * batch : (b + 1) * batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0:
            first_step = time.perf_counter() - PROCESS_START
            timed, cpu = time.perf_counter(), time.process_time()
        else:
            examples += len(idx)
    return {
        "examples_per_s": examples / (time.perf_counter() - timed),
        "first_step_s": first_step,
        "cpu_ms_per_step": (time.process_time() - cpu) / steps * 1000,
    }


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
    warnings.filterwarnings("ignore", message="This DataLoader will create 4 worker processes")
    loader = torch.utils.data.DataLoader(ds, batch, shuffle=True, num_workers=4)
    torch.manual_seed(0)
    model = build_model(model_name)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    metric = [0.0, 0.0, 0]
    first_step = timed = None
    step = examples = 0
    while step <= steps:
        for X, y in loader:
            y_hat = model(X)
            loss = loss_fn(y_hat, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            metric[0] += float(loss.detach()) * X.shape[0]
            metric[1] += float((y_hat.argmax(1) == y).sum())
            metric[2] += X.shape[0]
            if step == 0:
                first_step = time.perf_counter() - PROCESS_START
                timed, cpu = time.perf_counter(), time.process_time()
            else:
                examples += X.shape[0]
            step += 1
            if step > steps:
                break
    # cpu time of the main process only: the workers' decoding is not in it
    return {
        "examples_per_s": examples / (time.perf_counter() - timed),
        "first_step_s": first_step,
        "cpu_ms_per_step": (time.process_time() - cpu) / steps * 1000,
    }


def fashion_mnist(size: int, batch: int):
    from dlrun.data.vision import TorchvisionImageData

    return TorchvisionImageData(
        "FashionMNIST",
        data_root(),
        batch_size=batch,
        channels=1,
        num_classes=10,
        size=28,
        resize=None if size == 28 else size,
    )


def dlrun(model_name: str, steps: int, options: dict | None = None) -> dict:
    """dlrun's engine with its defaults (TensorBoard logger, progress, checkpoint at the end of the run),
    plus trainer `options`."""
    from dlrun.engine.trainer import Trainer
    from dlrun.loggers.tensorboard import TensorBoardLogger
    from dlrun.tasks.classification import ClassificationTask

    size, batch, lr, _ = SETTINGS[model_name]

    class Clock(ClassificationTask):
        """Starts the clock once the first optimizer step is done; counts the examples after it."""

        calls = examples = 0

        def training_step(self, model, b):
            Clock.calls += 1
            if Clock.calls == 2:
                clock["first_step_s"] = time.perf_counter() - PROCESS_START
                clock["start"], clock["cpu_start"] = time.perf_counter(), time.process_time()
            loss, stats, count = super().training_step(model, b)
            Clock.examples += count if Clock.calls > 1 else 0
            return loss, stats, count

        def on_validation_start(self, model, ctx):  # the end of each training epoch
            clock["train_time"] = clock.get("train_time", 0.0) + time.perf_counter() - clock.pop("start")
            clock["cpu"] = clock.get("cpu", 0.0) + time.process_time() - clock.pop("cpu_start")

        def on_train_epoch_start(self, model, ctx):
            if Clock.calls >= 1:
                clock["start"], clock["cpu_start"] = time.perf_counter(), time.process_time()

    clock = {}
    data = fashion_mnist(size, batch)
    torch.manual_seed(0)
    model = build_model(model_name)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            device="cpu",
            max_epochs=-1,
            max_steps=steps + 1,
            limit_val_batches=1,
            monitor="val/acc",
            monitor_mode="max",
            **(options or {}),
        )
        trainer.fit(
            model,
            Clock(),
            data,
            partial(torch.optim.SGD, lr=lr),
            logger=TensorBoardLogger(run_dir),
            run_dir=run_dir,
        )
    return {
        "examples_per_s": Clock.examples / clock["train_time"],
        "first_step_s": clock["first_step_s"],
        "cpu_ms_per_step": clock["cpu"] / steps * 1000,
    }


def lightning(model_name: str, steps: int) -> dict:
    """PyTorch Lightning's Trainer with its defaults (logger, progress bar, checkpoint), fed the same
    in-memory batches as dlrun so that only the engines differ."""
    import lightning as L

    size, batch, lr, _ = SETTINGS[model_name]
    clock = {}

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = build_model(model_name)
            self.calls = 0

        def training_step(self, b, _):
            self.calls += 1
            if self.calls == 2:
                clock["first_step_s"] = time.perf_counter() - PROCESS_START
                clock["start"], clock["cpu_start"] = time.perf_counter(), time.process_time()
            x, y = b
            if self.calls > 1:
                clock["examples"] = clock.get("examples", 0) + len(y)
            y_hat = self.model(x)
            loss = F.cross_entropy(y_hat, y)
            self.log("train/loss", loss, prog_bar=True)
            self.log("train/acc", (y_hat.argmax(1) == y).float().mean())
            return loss

        def on_train_end(self):
            clock["train_time"] = time.perf_counter() - clock["start"]
            clock["cpu"] = time.process_time() - clock["cpu_start"]

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=lr)

    warnings.filterwarnings("ignore")
    data = fashion_mnist(size, batch)
    data.setup(torch.device("cpu"))
    torch.manual_seed(0)
    module = Module()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=steps + 1,
            default_root_dir=run_dir,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, train_dataloaders=data.train_loader(epoch=1))
    return {
        "examples_per_s": clock["examples"] / clock["train_time"],
        "first_step_s": clock["first_step_s"],
        "cpu_ms_per_step": clock["cpu"] / steps * 1000,
    }


def measure(variant: str, model: str, steps: int) -> dict:
    if variant in DLRUN_OPTIONS:
        result = dlrun(model, steps, DLRUN_OPTIONS[variant])
    else:
        result = globals()[variant](model, steps)
    return result | {"peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads()}


def available_variants() -> tuple[str, ...]:
    try:
        import lightning  # noqa: F401
    except ImportError:
        return tuple(v for v in VARIANTS if v != "lightning")
    return VARIANTS


def startup(repeats: int) -> list[tuple[str, float, float]]:
    """Wall time of whole commands, fastest and median of `repeats`: what a user waits for at the prompt.
    dl-run's signature cache (dlrun.signature_cache) lives in a temporary folder: empty before each run of
    the cold-cache row, warmed by one untimed value error for the others."""
    dl_run = str(Path(sys.executable).with_name("dl-run"))
    value_error = [dl_run, "optim.lr=abc"]
    commands = {
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "dl-run --help": [dl_run, "--help"],
        "dl-run model=nope (config error)": [dl_run, "model=nope"],
        "dl-run --cfg job": [dl_run, "--cfg", "job"],
        "dl-run optim.lr=abc (value error, cold cache)": value_error,
        "dl-run optim.lr=abc (value error, warm cache)": value_error,
        "dl-run experiment=d2l/lenet data=fake mode=check": [
            dl_run,
            "experiment=d2l/lenet",
            "data=fake",
            "mode=check",
        ],
        "dl-run experiment=d2l/resnet18 data=fake mode=check": [
            dl_run,
            "experiment=d2l/resnet18",
            "data=fake",
            "mode=check",
        ],
    }
    rows = []
    with tempfile.TemporaryDirectory() as warm_cache:
        warm_env = os.environ | {"DLRUN_CACHE_DIR": warm_cache}
        subprocess.run(value_error, capture_output=True, cwd=warm_cache, env=warm_env)
        for label, cmd in commands.items():
            times = []
            for _ in range(repeats):
                with tempfile.TemporaryDirectory() as cwd:  # mode=check writes its run dir there
                    env = os.environ | {"DLRUN_CACHE_DIR": cwd} if "cold cache" in label else warm_env
                    start = time.perf_counter()
                    subprocess.run(cmd, capture_output=True, cwd=cwd, env=env)
                    times.append(time.perf_counter() - start)
            times.sort()
            rows.append((label, times[0], times[len(times) // 2]))
    return rows


def run_all(steps_scale: float, repeats: int, variants: tuple[str, ...], models: list[str]) -> list[dict]:
    """Each variant `repeats` times, interleaved and in a rotating order (bare-book-dlrun, book-dlrun-bare,
    ...) so that drift in the machine's speed, and whatever a variant leaves behind for the next, hits every
    variant alike; the row keeps the median run and the spread."""
    rows = []
    for model in models:
        _, batch, _, steps = SETTINGS[model]
        steps = max(3, int(steps * steps_scale))
        runs = {variant: [] for variant in variants}
        for repeat in range(repeats):
            for variant in variants[repeat % len(variants) :] + variants[: repeat % len(variants)]:
                proc = subprocess.run(
                    [sys.executable, __file__, "--variant", variant, "--model", model, "--steps", str(steps)],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                )
                if proc.returncode != 0:
                    raise SystemExit(f"{variant}/{model} failed:\n{proc.stderr}")
                runs[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(model, variant, runs[variant][-1], file=sys.stderr)
        for variant, results in runs.items():
            speeds = sorted(r["examples_per_s"] for r in results)
            median = next(r for r in results if r["examples_per_s"] == speeds[len(speeds) // 2])
            rows.append(
                {
                    "model": model,
                    "variant": variant,
                    "steps": steps,
                    "batch": batch,
                    "spread": (speeds[0], speeds[-1]),
                    "repeats": len(results),
                    "all_examples_per_s": [r["examples_per_s"] for r in results],
                }
                | median
            )
    return rows


BEGIN, END = "<!-- bench.py: begin -->", "<!-- bench.py: end -->"


def write_markdown(rows: list[dict], starts: list, path: Path, command: str) -> None:
    """The measured tables go between the BEGIN/END markers of `path`; the text around them is kept."""
    lines = [
        f"Measured with `{command}` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {rows[0]['threads']} threads, no GPU.",
        "",
        "| model | loop | steps × batch | examples/s (median) | min–max | × bare | × book | CPU ms/step "
        "| first step (s) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        by = {r["variant"]: r for r in rows if r["model"] == model}
        for variant, r in by.items():
            ratio = r["examples_per_s"] / by["bare"]["examples_per_s"]
            vs_book = r["examples_per_s"] / by["book"]["examples_per_s"]
            lines.append(
                f"| {model} | {variant} | {r['steps']} × {r['batch']} | {r['examples_per_s']:,.0f} | "
                f"{r['spread'][0]:,.0f}–{r['spread'][1]:,.0f} | {ratio:.2f} | {vs_book:.2f} | "
                f"{r['cpu_ms_per_step']:.1f} | {r['first_step_s']:.1f} | {r['peak_rss_mb']:,.0f} |"
            )
    lines += [
        "",
        "Loops: **bare** = tensors in memory, indexed batches, no logging; **book** = the book's "
        "`train_ch6`: torchvision dataset with `ToTensor` (and `Resize`), `DataLoader(num_workers=4)`, a "
        "`float()` per batch for its metrics; **dlrun** = `Trainer` with TensorBoard logging, progress "
        "output and a checkpoint; **dlrun+x** = the same with one trainer option on (`trainer.compile=true` "
        "compiles with inductor; its compile time is in *first step*); **lightning** = PyTorch Lightning's "
        "`Trainer` with its defaults, fed dlrun's in-memory batches. "
        "examples/s excludes the first step; *first step* counts from process start (imports and data "
        f"loading included). Each loop ran {rows[0]['repeats']} times, interleaved in a rotating order; "
        "the row shows the median run. *CPU ms/step* is the process's CPU time per training step (all its "
        "threads; for the book loop without its loader workers' decoding): far less sensitive than wall "
        "time to other load on the machine. The bare ResNet-18 loop resizes the whole training set up "
        "front, hence its memory. `scripts/bench_engine_cpu.py` measures the engine's own CPU time per "
        "step against the bare loop.",
        "",
        "Start-up (whole command, wall time):",
        "",
        "| command | fastest (s) | median (s) |",
        "|---|---|---|",
        *[f"| `{label}` | {fast:.2f} | {median:.2f} |" for label, fast, median in starts],
        "",
    ]
    write_between(path, BEGIN, END, "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", choices=VARIANTS, help="measure one loop in this process")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, help="loops to compare (default: all)")
    parser.add_argument("--model", choices=list(SETTINGS), default="lenet")
    parser.add_argument("--models", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every default step count")
    parser.add_argument("--repeats", type=int, default=5, help="runs per loop; the table shows the median")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    parser.add_argument(
        "--reuse", type=Path, help="an earlier --json file: keep its rows of the models not measured now"
    )
    parser.add_argument(
        "--startup-only", action="store_true", help="time the start-up commands alone and print their table"
    )
    args = parser.parse_args()
    if args.startup_only:
        print("| command | fastest (s) | median (s) |\n|---|---|---|")
        for label, fast, median in startup(args.repeats):
            print(f"| `{label}` | {fast:.2f} | {median:.2f} |")
        return
    if args.variant:
        print(json.dumps(measure(args.variant, args.model, args.steps or SETTINGS[args.model][3])))
        return
    variants = tuple(args.variants or available_variants())
    rows = run_all(args.scale, args.repeats, variants, args.models)
    if args.reuse:
        earlier = json.loads(args.reuse.read_text())
        rows = [r for r in earlier["rows"] if r["model"] not in args.models] + rows
    starts = startup(args.repeats)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "startup": starts}, indent=1))
    write_markdown(
        rows,
        starts,
        args.out,
        "python " + " ".join([Path(__file__).relative_to(ROOT).as_posix(), *sys.argv[1:]]),
    )
    print(args.out.read_text())


if __name__ == "__main__":
    main()
