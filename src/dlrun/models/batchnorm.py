"""Batch normalization written out as the book does (section 8.5)."""

import torch
from torch import Tensor, nn


def batch_norm(
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    moving_mean: Tensor,
    moving_var: Tensor,
    eps: float,
    momentum: float,
    training: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Normalise with batch statistics when training, with the moving averages otherwise.

    `momentum` is the book's convention: moving = momentum * moving + (1 - momentum) * batch statistic.
    """
    if not training:
        x_hat = (x - moving_mean) / torch.sqrt(moving_var + eps)
    else:
        dims = (0,) if x.ndim == 2 else (0, 2, 3)
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
        x_hat = (x - mean) / torch.sqrt(var + eps)
        with torch.no_grad():
            moving_mean = momentum * moving_mean + (1.0 - momentum) * mean
            moving_var = momentum * moving_var + (1.0 - momentum) * var
    return gamma * x_hat + beta, moving_mean, moving_var


class BatchNorm(nn.Module):
    """The book's BatchNorm: learnable scale/shift, moving statistics as buffers; for 2-D or 4-D inputs."""

    def __init__(self, num_features: int, num_dims: int, eps: float = 1e-5, momentum: float = 0.9):
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.register_buffer("moving_mean", torch.zeros(shape))
        self.register_buffer("moving_var", torch.ones(shape))
        self.eps, self.momentum = eps, momentum

    def forward(self, x: Tensor) -> Tensor:
        y, mean, var = batch_norm(
            x,
            self.gamma,
            self.beta,
            self.moving_mean,
            self.moving_var,
            self.eps,
            self.momentum,
            self.training,
        )
        if self.training:
            self.moving_mean.copy_(mean)
            self.moving_var.copy_(var)
        return y
