"""The book's toy data for kernel regression (10.2): 50 noisy samples of f(x) = 2 sin(x) + x^0.8.

Training: x = sorted(rand(50) * 5), y = f(x) + N(0, 0.5^2); validation: x = 0, 0.1, ..., 4.9 with the
noiseless f(x) (the book's test points and truth). Everything comes from `seed` (its own generator).
The training pairs are also the model's keys and values (`model_kwargs`).
"""

import torch
from torch import Tensor

from dlrun.data.in_memory import InMemoryData
from dlrun.errors import DlrunError
from dlrun.ranges import BatchSize, OptionalBatchSize


def truth(x: Tensor) -> Tensor:
    return 2 * torch.sin(x) + x**0.8


class KernelRegressionData(InMemoryData):
    def __init__(
        self,
        batch_size: BatchSize = 50,
        num_train: int = 50,
        noise: float = 0.5,
        seed: int = 0,
        val_batch_size: OptionalBatchSize = None,
        on_device: bool = False,
    ):
        super().__init__(batch_size, val_batch_size, on_device)
        if num_train < 2:
            raise DlrunError(f"data.num_train={num_train} must be >= 2 (leave-one-out needs another point)")
        generator = torch.Generator().manual_seed(seed)
        x, _ = torch.sort(torch.rand(num_train, generator=generator) * 5)
        y = truth(x) + noise * torch.randn(num_train, generator=generator)
        x_val = torch.arange(0, 5, 0.1)
        self.x_train, self.y_train = x[:, None], y[:, None]
        self.x_val, self.y_val = x_val[:, None], truth(x_val)[:, None]
        self.model_kwargs = {"keys": x.tolist(), "values": y.tolist()}
