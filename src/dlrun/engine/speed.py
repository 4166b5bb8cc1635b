"""Trainer options that change how fast a model runs, never what it computes (up to float rounding):
torch.compile, channels_last memory format, float32 matmul precision and intra-op threads; and `auto`, the
value `trainer=fast` gives precision, compile and channels_last: what is safe and fastest on the device."""

import logging

import torch
from torch import Tensor, nn

from dlrun.engine.device import AUTO
from dlrun.errors import DlrunError

log = logging.getLogger("dlrun")

MATMUL_PRECISIONS = ("highest", "high", "medium")
# compile=auto per device type: (torch.compile's setting, what the log says); MPS and the rest: off
AUTO_COMPILE = {
    "cuda": ({"mode": "reduce-overhead"}, "mode reduce-overhead (CUDA graphs)"),
    "cpu": (True, "inductor's defaults"),
}


def auto_compile(spec, device: torch.device):
    """`auto`: torch.compile on CUDA with CUDA graphs (mode reduce-overhead) and on the CPU with inductor's
    defaults; not on MPS, where inductor is experimental. Other values pass through."""
    if spec != AUTO:
        return spec
    choice, said = AUTO_COMPILE.get(device.type, (False, "off"))
    log.info("trainer.compile=auto: %s on %s", said, device.type)
    return choice


def is_convolutional(model: nn.Module) -> bool:
    return any(p.dim() == 4 for p in model.parameters())


def auto_channels_last(setting: bool | str, model: nn.Module) -> bool:
    """`auto`: NHWC for models with 2-D convolutions (4-D weights), as is for the rest."""
    if setting != AUTO:
        return bool(setting)
    choice = is_convolutional(model)
    log.info(
        "trainer.channels_last=auto: %s (%s)", choice, "convolutional" if choice else "no 2-D convolutions"
    )
    return choice


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
    if is_convolutional(model):
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


class EagerFallback:
    """A compiled module that turns into its plain module, with one warning line, when compiling fails.

    trainer=fast compiles whatever model it is given; an operator inductor cannot lower, or a missing C++
    compiler, must cost speed, not the run. A call that fails eagerly as well raises eager's error (the
    model's own bug, not the compiler's). Attributes are the running module's (e.g. an RNN's begin_state)."""

    def __init__(self, compiled, eager):
        self.compiled, self.eager, self.failed = compiled, eager, False

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as err:
            if not is_compile_error(err):
                raise
            out = self.eager(*args, **kwargs)
            self.failed = True
            log.warning("torch.compile failed, training eagerly from here: %s", first_lines(err))
            return out

    def __getattr__(self, name):
        return getattr(self.eager if self.failed else self.compiled, name)


def first_lines(err: Exception) -> str:
    """What a compile error says, in one line: dynamo puts the backend's own error on the second line."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.startswith(("Set ", "For "))]
    return " ".join(lines[:2])[:200] or type(err).__name__


def is_compile_error(err: Exception) -> bool:
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import InductorError

    return isinstance(err, (TorchDynamoException, InductorError))


def compile_model(model: nn.Module, spec, fallback: bool = False) -> nn.Module:
    """`trainer.compile`: false, true, or torch.compile's keyword arguments (mode, backend, dynamic, ...);
    `fallback` (trainer=fast): a failure to compile trains eagerly instead of ending the run.

    The compiled wrapper only runs the steps; checkpoints keep saving the plain module, so their keys
    carry no `_orig_mod.` prefix and load into an uncompiled model."""
    if spec in (None, False):
        return model
    kwargs = {} if spec is True else dict(spec)
    try:
        compiled = torch.compile(model, **kwargs)
    except TypeError as err:
        raise DlrunError(f"trainer.compile={spec}: {err}") from None
    return EagerFallback(compiled, model) if fallback else compiled


def prepare_model(
    model: nn.Module, device: torch.device, dist, compile_spec, channels_last: bool, fallback: bool
):
    """(model on the device, what the training steps run, what validation runs).

    The steps run the model or its compiled wrapper (checkpoints save the plain model); under DDP they run
    (compiled) DDP(model), while validation runs without the DDP wrapper, which could sync buffers while
    the ranks' validation shards differ in length."""
    model = model.to(device)
    if channels_last:
        channels_last_model(model)
    eval_model = step_model = compile_model(model, compile_spec, fallback)
    if dist.ddp:
        step_model = compile_model(dist.wrap(model, device), compile_spec, fallback)
    return model, step_model, eval_model
