"""Trainer options that change how fast a model runs, never what it computes (up to float rounding):
torch.compile, channels_last memory format, float32 matmul precision and intra-op threads."""

import logging

import torch
from torch import Tensor, nn

from dlrun.errors import DlrunError

log = logging.getLogger("dlrun")

MATMUL_PRECISIONS = ("highest", "high", "medium")


def set_matmul_precision(precision: str | None) -> None:
    """`high`/`medium` let float32 matmuls use TF32 or bf16 passes where the GPU has them; null: as is."""
    if precision is None:
        return
    if precision not in MATMUL_PRECISIONS:
        raise DlrunError(
            f"trainer.matmul_precision={precision!r}; choose one of {', '.join(MATMUL_PRECISIONS)} or null"
        )
    torch.set_float32_matmul_precision(precision)


def set_num_threads(num_threads: int | None) -> None:
    """Intra-op CPU threads; tiny recurrent steps often run faster on one thread than on several."""
    if num_threads is None:
        return
    if num_threads < 1:
        raise DlrunError(f"trainer.num_threads={num_threads} must be >= 1 (or null for torch's default)")
    torch.set_num_threads(num_threads)


def channels_last_model(model: nn.Module) -> nn.Module:
    """Conv weights (and so activations) in NHWC order; models without 4-D parameters are left alone."""
    if any(p.dim() == 4 for p in model.parameters()):
        model.to(memory_format=torch.channels_last)
    return model


def channels_last_batch(batch):
    """Every 4-D floating tensor of a batch (a tensor, or a tuple/list/dict of them) in NHWC order."""
    if isinstance(batch, Tensor):
        if batch.dim() == 4 and batch.is_floating_point():
            return batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(channels_last_batch(b) for b in batch)
    if isinstance(batch, dict):
        return {k: channels_last_batch(v) for k, v in batch.items()}
    return batch


def compile_model(model: nn.Module, spec) -> nn.Module:
    """`trainer.compile`: false, true, or torch.compile's keyword arguments (mode, backend, dynamic, ...).

    The compiled wrapper only runs the steps; checkpoints keep saving the plain module, so their keys
    carry no `_orig_mod.` prefix and load into an uncompiled model."""
    if spec in (None, False):
        return model
    kwargs = {} if spec is True else dict(spec)
    try:
        return torch.compile(model, **kwargs)
    except TypeError as err:
        raise DlrunError(f"trainer.compile={spec}: {err}") from None


def prepare_model(model: nn.Module, device: torch.device, dist, compile_spec, channels_last: bool):
    """(model on the device, what the training steps run, what validation runs).

    The steps run the model or its compiled wrapper (checkpoints save the plain model); under DDP they run
    (compiled) DDP(model), while validation runs without the DDP wrapper, which could sync buffers while
    the ranks' validation shards differ in length."""
    model = model.to(device)
    if channels_last:
        channels_last_model(model)
    eval_model = step_model = compile_model(model, compile_spec)
    if dist.ddp:
        step_model = compile_model(dist.wrap(model, device), compile_spec)
    return model, step_model, eval_model
