"""Nadaraya-Watson kernel regression as attention pooling (book 10.2).

f(q) = sum_i softmax_i(-((q - x_i) w)^2 / 2) y_i over the training pairs (x_i, y_i) as keys and values:
w = 1 is the book's fixed Gaussian kernel, a learned w its parametric version (initialised U(0, 1) as the
book's when `w_init` is null). In training mode each query leaves out the key equal to it (the book trains
w on leave-one-out keys: a training point must not predict itself). `attention_weights` (queries, keys)
holds the last weights; `weight` is w, for the regression task's reports.
"""

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dlrun.errors import DlrunError


class NadarayaWatson(nn.Module):
    def __init__(self, keys: list[float], values: list[float], w_init: float | None = None):
        super().__init__()
        if len(keys) != len(values) or len(keys) < 2:
            raise DlrunError(f"model.keys ({len(keys)}) and model.values ({len(values)}): give >= 2 pairs")
        self.register_buffer("keys", torch.tensor(keys, dtype=torch.float32))
        self.register_buffer("values", torch.tensor(values, dtype=torch.float32))
        self.w = nn.Parameter(torch.rand(1) if w_init is None else torch.tensor([float(w_init)]))
        self.attention_weights: Tensor | None = None

    @property
    def weight(self) -> Tensor:
        return self.w[None]

    def forward(self, x: Tensor) -> Tensor:
        """x (n, 1) queries -> (n, 1) predictions."""
        distances = x.reshape(-1, 1) - self.keys[None, :]
        scores = -((distances * self.w) ** 2) / 2
        if self.training:
            scores = scores.masked_fill(distances == 0, -torch.inf)
        weights = F.softmax(scores, dim=1)
        self.attention_weights = weights.detach()
        return weights @ self.values[:, None]
