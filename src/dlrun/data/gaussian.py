"""The 1.0 edition's GAN data (20.1): points of a 2-D Gaussian, X = Z A + b with Z ~ N(0, I), so the
real distribution has mean b and covariance AᵀA. No held-out set: a GAN has no validation loss."""

from collections.abc import Sequence

import torch

from dlrun.data.in_memory import InMemoryData
from dlrun.errors import DlrunError


class GaussianData(InMemoryData):
    def __init__(
        self,
        batch_size: int = 8,
        num_examples: int = 1000,
        A: Sequence[Sequence[float]] = ((1.0, 2.0), (-0.1, 0.5)),
        b: Sequence[float] = (1.0, 2.0),
        seed: int = 0,
        on_device: bool = False,
    ):
        super().__init__(batch_size, on_device=on_device)
        self.A = torch.tensor(A, dtype=torch.float32)
        self.b = torch.tensor(b, dtype=torch.float32)
        if self.A.ndim != 2 or self.A.shape[1] != self.b.numel():
            raise DlrunError(
                f"data.A is {tuple(self.A.shape)} and data.b has {self.b.numel()} values; "
                "A must be (latent, dims) with dims = len(b)"
            )
        if num_examples < 1:
            raise DlrunError(f"data.num_examples={num_examples} must be >= 1")
        z = torch.randn(num_examples, self.A.shape[0], generator=torch.Generator().manual_seed(seed))
        self.x_train = z @ self.A + self.b
        self.y_train = torch.zeros(num_examples)  # unused: the GAN's labels are real/fake
        self.x_val, self.y_val = self.x_train[:0], self.y_train[:0]

    @property
    def true_mean(self) -> torch.Tensor:
        return self.b

    @property
    def true_cov(self) -> torch.Tensor:
        return self.A.T @ self.A
