"""GPU throughput and MFU: a hand-tuned bare loop against dlrun's engine, for LeNet and the book's ResNet-18.

    python scripts/bench_gpu.py                 # every row -> docs/performance.md (GPU table); needs CUDA
    python scripts/bench_gpu.py --models resnet18 --modes fast --batches 256
    python scripts/bench_gpu.py --device cpu --steps 3 --batches 8 --modes fp32   # a smoke run of the code

Modes: **fp32**; **bf16_cl** = bf16 autocast + channels_last; **fast** = bf16 + channels_last +
torch.compile(mode=reduce-overhead) (CUDA graphs), what `trainer=fast` picks on a bf16 GPU. Batches: 256 and
the largest power of two that fits (found by doubling the bare fp32 loop until it runs out of memory).

Each measurement runs in its own process (its own peak memory and compile caches) on random images already
on the GPU (data loading is not what is measured: `scripts/bench_streaming.py` does that), SGD, after warm-up
steps. MFU = (training FLOPs per image, counted with `torch.utils.flop_counter` over a forward and backward
pass) × images/s ÷ the device's peak, measured here as the best of a few large bf16 matmuls.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bench_gpu.py: begin -->", "<!-- bench_gpu.py: end -->"
IMAGE = {"lenet": (1, 28), "resnet18": (1, 96)}  # (channels, size): Fashion-MNIST, resized for ResNet
MODES = {  # precision, channels_last, compile
    "fp32": ("32", False, False),
    "bf16_cl": ("bf16-mixed", True, False),
    "fast": ("bf16-mixed", True, {"mode": "reduce-overhead"}),
}


def build_model(name: str) -> torch.nn.Module:
    if name == "lenet":
        from dlrun.models.lenet import LeNet

        return LeNet()
    from dlrun.models.resnet import ResNet

    return ResNet(stages=[2, 2, 2, 2])


def random_images(model_name: str, batch: int, device: torch.device, batches: int = 8):
    channels, size = IMAGE[model_name]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batches * batch, channels, size, size, generator=g)
    y = torch.randint(0, 10, (batches * batch,), generator=g)
    return x.to(device), y.to(device)


def train_flops_per_image(model: torch.nn.Module, model_name: str, device: torch.device) -> float:
    """FLOPs of one training step (forward + backward) per image, counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    x, y = random_images(model_name, 2, device, batches=1)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(y)


def peak_flops(device: torch.device, repeats: int = 20) -> float:
    """The device's bf16 matmul rate, measured: what MFU divides by (float32 and a small size on the CPU)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare(model_name: str, batch: int, mode: str, steps: int, device: torch.device) -> dict:
    """The loop a performance-minded user writes: data on the GPU, autocast, channels_last, compile,
    zero_grad(set_to_none), no host syncs per step."""
    precision, channels_last, compile_spec = MODES[mode]
    torch.manual_seed(0)
    model = build_model(model_name).to(device)
    x, y = random_images(model_name, batch, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    step_model = torch.compile(model, **compile_spec) if compile_spec else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    dtype = torch.bfloat16 if precision == "bf16-mixed" else None
    batches = len(y) // batch

    def step(i):
        xb, yb = x[i % batches * batch :][:batch], y[i % batches * batch :][:batch]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(step_model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    warmup = 5 if compile_spec else 2
    for i in range(warmup):
        step(i)
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    sync(device)
    return {"images_per_s": steps * batch / (time.perf_counter() - start)}


def dlrun(model_name: str, batch: int, mode: str, steps: int, device: torch.device) -> dict:
    """dlrun's Trainer with the same settings (trainer keys precision, channels_last, compile), data on the
    device, the default logging cadence; the rate of the epochs after the first (compilation, warm-up)."""
    import tempfile
    from functools import partial

    from dlrun.data.in_memory import InMemoryData
    from dlrun.engine.trainer import Trainer
    from dlrun.tasks.classification import ClassificationTask

    precision, channels_last, compile_spec = MODES[mode]

    class RandomImages(InMemoryData):
        def __init__(self):
            super().__init__(batch_size=batch, on_device=True, drop_last=True)
            self.x_train, self.y_train = random_images(model_name, batch, torch.device("cpu"))
            self.x_val, self.y_val = self.x_train[:batch], self.y_train[:batch]

    torch.manual_seed(0)
    epochs = max(2, -(-steps // 8) + 1)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            device=str(device),
            precision=precision,
            channels_last=channels_last,
            compile=compile_spec,
            max_epochs=epochs,
            progress_bar=False,
            checkpoint=False,
            curves=False,
            limit_val_batches=1,
            monitor=None,
        )
        summary = trainer.fit(
            build_model(model_name),
            ClassificationTask(),
            RandomImages(),
            partial(torch.optim.SGD, lr=0.01),
            run_dir=run_dir,
        )
    later = summary["history"][1:]
    return {"images_per_s": sum(h["throughput/train_examples_per_s"] for h in later) / len(later)}


def measure(loop: str, model_name: str, batch: int, mode: str, steps: int, device: torch.device) -> dict:
    result = globals()[loop](model_name, batch, mode, steps, device)
    model = build_model(model_name).to(device)
    result["train_flops_per_image"] = train_flops_per_image(model, model_name, device)
    if device.type == "cuda":
        result["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def largest_batch(model_name: str, device: torch.device, limit: int = 1 << 14) -> int:
    """The largest power of two the bare fp32 loop trains at without running out of memory."""
    batch = 256
    while batch * 2 <= limit:
        proc = run_one("bare", model_name, batch * 2, "fp32", 2, device)
        if proc is None:
            break
        batch *= 2
    return batch


def run_one(loop: str, model: str, batch: int, mode: str, steps: int, device: torch.device) -> dict | None:
    cmd = [sys.executable, __file__, "--one", loop, "--models", model, "--batches", str(batch)]
    cmd += ["--modes", mode, "--steps", str(steps), "--device", str(device)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        if "OutOfMemoryError" in proc.stderr or "out of memory" in proc.stderr:
            return None
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict], peak: float, command: str, device_name: str) -> str:
    lines = [
        f"Measured with `{command}` on {device_name}, torch {torch.__version__}; measured bf16 matmul peak "
        f"{peak / 1e12:.2f} TFLOP/s.",
        "",
        "| model | loop | mode | batch | images/s | × bare | MFU | peak memory (GB) | train GFLOPs/image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bare_rate = next(
            b["images_per_s"]
            for b in rows
            if (b["loop"], b["model"], b["mode"], b["batch"]) == ("bare", r["model"], r["mode"], r["batch"])
        )
        mfu = r["train_flops_per_image"] * r["images_per_s"] / peak
        lines.append(
            f"| {r['model']} | {r['loop']} | {r['mode']} | {r['batch']} | {r['images_per_s']:,.0f} | "
            f"{r['images_per_s'] / bare_rate:.2f} | {mfu:.1%} | {r.get('peak_memory_gb', 0):.1f} | "
            f"{r['train_flops_per_image'] / 1e9:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["lenet", "resnet18"], choices=list(IMAGE))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--batches", nargs="+", default=["256", "max"], help="sizes, or max")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--one", choices=["bare", "dlrun"], help="one measurement, JSON on stdout")
    parser.add_argument("--write", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu.py needs CUDA (no GPU here); nothing measured. `--device cpu` runs it on the CPU.")
        return
    if args.one:
        print(
            json.dumps(
                measure(args.one, args.models[0], int(args.batches[0]), args.modes[0], args.steps, device)
            )
        )
        return
    rows = []
    for model in args.models:
        batches = [largest_batch(model, device) if b == "max" else int(b) for b in args.batches]
        for batch in dict.fromkeys(batches):
            for mode in args.modes:
                for loop in ("bare", "dlrun"):
                    result = run_one(loop, model, batch, mode, args.steps, device)
                    if result is None:
                        print(f"{model} {loop} {mode} batch {batch}: out of memory", file=sys.stderr)
                        continue
                    rows.append({"model": model, "loop": loop, "mode": mode, "batch": batch} | result)
                    print(json.dumps(rows[-1]), file=sys.stderr)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
    text = markdown(rows, peak_flops(device), "python scripts/bench_gpu.py " + " ".join(sys.argv[1:]), name)
    if device.type == "cuda":
        from dlrun.markers import write_between

        write_between(args.write, BEGIN, END, text)
    print(text)


if __name__ == "__main__":
    main()
