"""The book's generated regression sets (chapters 3.2, 4.4, 4.5): no files, everything from `seed`.

Each draws from its own torch.Generator, so the data does not depend on the run's global seed (the model's
initialisation and the batch order do). Tensors are float32, targets of shape (n, 1). The true parameters are
kept as `true_w`, `true_b` for the regression task to compare with what the model learned.
"""

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from dlrun.data.in_memory import InMemoryData
from dlrun.errors import DlrunError
from dlrun.ranges import BatchSize, OptionalBatchSize


def linear_data(
    w: Tensor, b: float, n: int, noise: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The book's synthetic_data: X ~ N(0, 1), y = Xw + b + N(0, noise^2)."""
    x = torch.randn(n, w.numel(), generator=generator)
    y = x @ w.reshape(-1, 1) + b
    return x, y + noise * torch.randn(y.shape, generator=generator)


class SyntheticLinearData(InMemoryData):
    """Book 3.2: y = Xw + b + N(0, 0.01^2), w = [2, -3.4], b = 4.2, 1000 training examples.

    The book trains and reports on the same 1000 examples; here validation is `num_val` fresh examples
    drawn from the same distribution (an independent sample, not a split of the training set), so
    val/loss measures the fit without sharing a single example with training.
    """

    def __init__(
        self,
        batch_size: BatchSize = 10,
        num_train: int = 1000,
        num_val: int = 1000,
        w: Sequence[float] = (2.0, -3.4),
        b: float = 4.2,
        noise: float = 0.01,
        seed: int = 0,
        val_batch_size: OptionalBatchSize = None,
        on_device: bool = False,
    ):
        super().__init__(batch_size, val_batch_size, on_device)
        if num_train < 1 or num_val < 1:
            raise DlrunError(f"data.num_train={num_train}, data.num_val={num_val} must both be >= 1")
        generator = torch.Generator().manual_seed(seed)
        self.true_w = torch.tensor(list(w), dtype=torch.float32)
        self.true_b = float(b)
        self.x_train, self.y_train = linear_data(self.true_w, self.true_b, num_train, noise, generator)
        self.x_val, self.y_val = linear_data(self.true_w, self.true_b, num_val, noise, generator)
        self.model_kwargs = {"in_features": self.true_w.numel()}


class PolynomialData(InMemoryData):
    """Book 4.4 (under- and over-fitting): x ~ N(0, 1), features x^i / i! for i = 0 .. max_degree - 1,
    y = 5 + 1.2x - 3.4x^2/2! + 5.6x^3/3! + N(0, 0.1^2); 100 training and 100 test examples (the test
    examples are the validation set, as in the book).

    `num_features` keeps the first columns: 4 = the right model, 2 = underfitting (linear), 20 (all of the
    book's max_degree = 20 columns) = overfitting. The x^0 column is the bias: use the model without one.
    """

    def __init__(
        self,
        batch_size: BatchSize = 10,
        num_features: int = 4,
        max_degree: int = 20,
        num_train: int = 100,
        num_test: int = 100,
        true_coefficients: Sequence[float] = (5.0, 1.2, -3.4, 5.6),
        noise: float = 0.1,
        seed: int = 0,
        val_batch_size: OptionalBatchSize = None,
        on_device: bool = False,
    ):
        super().__init__(batch_size, val_batch_size, on_device)
        if not 1 <= num_features <= max_degree:
            raise DlrunError(
                f"data.num_features={num_features} must lie in [1, data.max_degree={max_degree}]"
            )
        if len(true_coefficients) > max_degree:
            raise DlrunError(f"{len(true_coefficients)} true coefficients but data.max_degree={max_degree}")
        generator = torch.Generator().manual_seed(seed)
        coefficients = torch.zeros(max_degree)
        coefficients[: len(true_coefficients)] = torch.tensor(list(true_coefficients))
        x = torch.randn(num_train + num_test, 1, generator=generator, dtype=torch.float64)
        powers = torch.arange(max_degree, dtype=torch.float64)
        factorials = torch.tensor([math.gamma(i + 1) for i in range(max_degree)], dtype=torch.float64)
        features = x.pow(powers) / factorials
        y = features @ coefficients.double().reshape(-1, 1)
        y = y + noise * torch.randn(y.shape, generator=generator, dtype=torch.float64)
        features, y = features[:, :num_features].float(), y.float()
        self.x_train, self.y_train = features[:num_train], y[:num_train]
        self.x_val, self.y_val = features[num_train:], y[num_train:]
        self.true_w = coefficients[:num_features]
        self.true_b = None
        self.model_kwargs = {"in_features": num_features}


class HighDimLinearData(InMemoryData):
    """Book 4.5 (weight decay): 200 inputs, y = 0.05 + sum_i 0.01 x_i + N(0, 0.01^2); 20 training and 100
    test examples (the test examples are the validation set, as in the book): a setting that overfits."""

    def __init__(
        self,
        batch_size: BatchSize = 5,
        num_inputs: int = 200,
        num_train: int = 20,
        num_test: int = 100,
        w_value: float = 0.01,
        b: float = 0.05,
        noise: float = 0.01,
        seed: int = 0,
        val_batch_size: OptionalBatchSize = None,
        on_device: bool = False,
    ):
        super().__init__(batch_size, val_batch_size, on_device)
        if num_inputs < 1 or num_train < 1 or num_test < 1:
            raise DlrunError("data.num_inputs, data.num_train and data.num_test must be >= 1")
        generator = torch.Generator().manual_seed(seed)
        self.true_w = torch.full((num_inputs,), float(w_value))
        self.true_b = float(b)
        self.x_train, self.y_train = linear_data(self.true_w, self.true_b, num_train, noise, generator)
        self.x_val, self.y_val = linear_data(self.true_w, self.true_b, num_test, noise, generator)
        self.model_kwargs = {"in_features": num_inputs}
