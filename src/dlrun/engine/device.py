"""Device selection and mixed precision (autocast + GradScaler)."""

import logging
from contextlib import AbstractContextManager

import torch

from dlrun import precision_names
from dlrun.errors import DlrunError
from dlrun.precision_names import AUTO

log = logging.getLogger("dlrun")


def select_device(spec: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; explicit requests are checked against the hardware."""
    spec = str(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DlrunError(
            f"trainer.device={spec!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DlrunError(
                f"trainer.device={spec} but CUDA is not available here; use trainer.device=auto or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DlrunError(
                f"trainer.device={spec} but only {torch.cuda.device_count()} CUDA device(s) exist "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DlrunError("trainer.device=mps but MPS is not available here; use trainer.device=auto or cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DlrunError(f"trainer.device={spec!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes in bf16 in hardware: a CUDA GPU from Ampere on, a CPU whose bf16
    instructions oneDNN uses (AVX512-BF16, AMX); emulated bf16 is slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def auto_precision(precision: str | int, device: torch.device) -> str | int:
    """`auto`: bf16 autocast where the device computes in bf16 natively, else 32; other values pass."""
    if precision != AUTO:
        return precision
    choice = "bf16-mixed" if native_bf16(device) else "32"
    log.info(
        "trainer.precision=auto: %s (%s bf16 on %s)",
        choice,
        "native" if choice != "32" else "no native",
        device,
    )
    return choice


class Precision:
    """`32`, `bf16-mixed` or `16-mixed` on a given device: an autocast context and a grad scaler."""

    parse = staticmethod(precision_names.parse)

    def __init__(self, precision: str | int, device: torch.device):
        try:
            precision = self.parse(precision)
        except ValueError as err:
            raise DlrunError(f"trainer.precision={precision!r} is unknown; use {err}") from None
        precision = auto_precision(precision, device)
        if precision == "16-mixed" and device.type != "cuda":
            raise DlrunError(
                f"trainer.precision=16-mixed needs a CUDA device (this run uses {device.type}); "
                "use trainer.precision=bf16-mixed or 32"
            )
        if precision == "bf16-mixed" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise DlrunError(
                f"trainer.precision=bf16-mixed is not supported by {torch.cuda.get_device_name(device)}; "
                "use trainer.precision=16-mixed or 32"
            )
        self.name = precision
        self.device = device
        self.dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
        # A disabled scaler passes scale/unscale/step/update straight through, so the loop has one path.
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)
