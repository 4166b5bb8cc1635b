"""mode=check, a dry run: build every part, take one training step and one validation batch through the real
engine (in a throwaway directory: no checkpoint, no metrics.json, no logger), then print the model summary:
per layer its output shape, parameters and FLOPs per example, and the memory of parameters, gradients,
optimizer state and activations."""

import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dlrun.console import render
from dlrun.engine.seed import seed_everything
from dlrun.modes.common import batch_size_of, first_batch, head
from dlrun.run import build, build_callbacks, model_node, trainer_node

log = logging.getLogger("dlrun")

SUMMARY_FILE = "model_summary.txt"
DEPTH = 2  # rows: the model's modules down to this depth (deeper ones count in their parents)
EXAMPLES = 2  # the summary pass runs this many examples of a validation batch
# The dry run's step and validation batch take the first examples of a batch (`+check.examples=N`; 0: the
# whole batch): enough to wire every part up, seconds even for ResNet-18 on a CPU.
STEP_EXAMPLES = 8


def run(cfg: DictConfig) -> None:
    start = time.perf_counter()
    seed_everything(cfg.seed)
    data = build(cfg.data, "data")
    examples = int((cfg.get("check") or {}).get("examples", STEP_EXAMPLES))
    # fast_dev_run: one training step, one validation batch, no checkpoint and no logger; a resume would
    # read a checkpoint the dry run has no business with.
    node = trainer_node(cfg) | {"fast_dev_run": True, "resume": None, "progress_bar": False}
    trainer = build(node, "trainer", callbacks=build_callbacks(cfg))
    model = build(model_node(cfg), "model", **data.model_kwargs)
    task = build(cfg.task, "task")
    optimizer = build(cfg.optim, "optim")
    scheduler = build(cfg.sched.scheduler, "sched") if cfg.sched.scheduler is not None else None
    with tempfile.TemporaryDirectory(prefix="dlrun_check_") as scratch:
        result = trainer.fit(
            model,
            task,
            FirstExamples(data, examples) if examples > 0 else data,
            optimizer,
            scheduler,
            cfg.sched.interval,
            None,
            run_dir=scratch,
            runs_root=scratch,
            config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
            seed=cfg.seed,
            title=f"{cfg.name} check",
        )
    batch = first_batch(data)
    rows, totals = model_summary(model, task, head(batch, EXAMPLES))
    train_batch = int(cfg.data.get("batch_size") or batch_size_of(batch))
    memory = memory_figures(model, trainer.optimization.optimizers.values(), totals, train_batch)
    final = result["final"]
    size = f"{examples} examples of each batch" if 0 < examples < train_batch else "whole batches"
    steps = ", ".join(f"{k} {v:.4g}" for k, v in final.items() if k.startswith(("train/", "val/")))
    headline = (
        f"check passed in {time.perf_counter() - start:.1f}s: one training step and one validation batch "
        f"({size}) on {trainer.device}, precision {trainer.precision.name}: {steps}"
    )
    text = summary_renderable(cfg, rows, totals, memory, headline)
    show(text, Path(cfg.paths.output_dir) / SUMMARY_FILE)


class FirstExamples:
    """The data module, its batches cut to their first `n` examples (everything else passes through)."""

    def __init__(self, data, n: int):
        self._data, self._n = data, n

    def __getattr__(self, name):
        return getattr(self._data, name)

    def train_loader(self, epoch: int = 0, skip: int = 0):
        return Cut(self._data.train_loader(epoch, skip), self._n)

    def val_loader(self):
        return Cut(self._data.val_loader(), self._n)


class Cut:
    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return (head(batch, self.n) for batch in self.loader)


# ------------------------------------------------------------------ summary
def model_summary(model: nn.Module, task, batch) -> tuple[list[dict], dict]:
    """One eval-mode validation_step on `batch` with forward hooks and a FlopCounterMode: per module its
    output shape (per example), parameters and FLOPs per example; totals with the leaf outputs' bytes."""
    n = batch_size_of(batch)
    names = {module: name for name, module in model.named_modules()}
    shapes: dict[str, str] = {}
    leaf_bytes = [0]

    def hook(module, _inputs, output):
        name = names[module]
        shapes.setdefault(name, describe(output, n))
        if not any(True for _ in module.children()):
            leaf_bytes[0] += tensor_bytes(output)

    handles = [module.register_forward_hook(hook) for module in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, depth=None) as counter:
            task.validation_step(model, batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    root = type(model).__name__
    flops = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    rows = []
    for name, module in model.named_modules():
        depth = name.count(".") + 1 if name else 0
        if not name or depth > DEPTH:
            continue
        rows.append(
            {
                "layer": name,
                "depth": depth,
                "type": type(module).__name__,
                "output": shapes.get(name, "—"),
                "params": sum(p.numel() for p in module.parameters()),
                "flops": flops.get(f"{root}.{name}", 0) / n,
            }
        )
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    totals = {
        "params": params,
        "trainable": trainable,
        "flops": counter.get_total_flops() / n,
        "activation_bytes_per_example": leaf_bytes[0] / n,
        "output": shapes.get("", "—"),
    }
    return rows, totals


def memory_figures(model: nn.Module, optimizers, totals: dict, batch_size: int) -> dict:
    params = sum(tensor_bytes(p) for p in model.parameters())
    buffers = sum(tensor_bytes(b) for b in model.buffers())
    trainable = sum(tensor_bytes(p) for p in model.parameters() if p.requires_grad)
    state = sum(tensor_bytes(list(s.values())) for opt in optimizers for s in opt.state.values())
    return {
        "parameters": params + buffers,
        "gradients": trainable,
        "optimizer state": state,
        f"activations (batch {batch_size})": totals["activation_bytes_per_example"] * batch_size,
    }


def summary_renderable(cfg: DictConfig, rows: list[dict], totals: dict, memory: dict, headline: str):
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False, show_footer=True)
    table.add_column("layer", footer="total")
    table.add_column("type")
    table.add_column("output shape", footer=totals["output"])
    table.add_column("parameters", justify="right", footer=f"{totals['params']:,}")
    table.add_column("FLOPs/example", justify="right", footer=flops_text(totals["flops"]))
    for row in rows:
        indent = "  " * (row["depth"] - 1)
        table.add_row(
            indent + row["layer"].rsplit(".", 1)[-1] if row["depth"] > 1 else row["layer"],
            row["type"],
            row["output"],
            f"{row['params']:,}",
            flops_text(row["flops"]),
        )
    mem = Table.grid(padding=(0, 2))
    mem.add_column()
    mem.add_column(justify="right")
    for name, value in memory.items():
        mem.add_row(name, mb(value))
    mem.add_row("total", mb(sum(memory.values())))
    title = Text(f"{cfg.name}: {cfg.model._target_.rsplit('.', 1)[-1]}", style="bold")
    params = Text(
        f"{totals['params']:,} parameters ({totals['trainable']:,} trainable), "
        f"{flops_text(totals['flops'])} FLOPs per example (forward)"
    )
    return Group(title, table, params, Text("memory (MB)", style="bold"), mem, Text(headline, style="bold"))


def show(renderable, path: Path) -> None:
    """On stdout (coloured on a terminal), and as plain text in the run dir (no checkpoint is written)."""
    if sys.stdout.isatty():
        Console(highlight=False).print(renderable)
    else:
        sys.stdout.write(render(renderable))
        sys.stdout.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(renderable))
    log.info("model summary: %s", path)


# ------------------------------------------------------------------ helpers
def describe(output, n: int) -> str:
    """An output's shape per example: B×C×H×W (a tuple of outputs: each)."""
    if torch.is_tensor(output):
        dims = [str(d) for d in output.shape]
        if dims and output.shape[0] == n:
            dims[0] = "B"
        return "×".join(dims) or "scalar"
    if isinstance(output, list | tuple):
        return ", ".join(describe(o, n) for o in output if o is not None)
    return type(output).__name__


def tensor_bytes(obj) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(tensor_bytes(o) for o in obj.values())
    return 0


def flops_text(flops: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops:.0f}"


def mb(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:,.1f}"
