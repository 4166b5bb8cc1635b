"""Linear regression (book 3.2 from scratch, 3.3 concise): y = Xw + b."""

import torch
from torch import Tensor, nn

from dlrun.errors import DlrunError


class LinearRegression(nn.Module):
    """`impl="scratch"`: w and b as bare parameters, X @ w + b (book 3.2); `impl="torch"`: nn.Linear (3.3).

    Both start from w ~ N(0, init_std), b = 0 and expose `weight` (out_features, in_features) and `bias`
    (None without one), so a task can print the learned parameters or ||w|| whichever is used.
    `bias=False` is the book's polynomial model, whose x^0 feature plays the bias.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        impl: str = "torch",
        init_std: float = 0.01,
        bias: bool = True,
    ):
        super().__init__()
        if impl not in ("torch", "scratch"):
            raise DlrunError(f"model.impl={impl!r}; use torch or scratch")
        if not isinstance(in_features, int) or in_features < 1:
            raise DlrunError(f"model.in_features={in_features!r} must be a positive int")
        self.impl = impl
        if impl == "torch":
            self.linear = nn.Linear(in_features, out_features, bias=bias)
            nn.init.normal_(self.linear.weight, std=init_std)
            if bias:
                nn.init.zeros_(self.linear.bias)
        else:
            self.w = nn.Parameter(torch.randn(in_features, out_features) * init_std)
            self.register_parameter("b", nn.Parameter(torch.zeros(out_features)) if bias else None)

    @property
    def weight(self) -> Tensor:
        return self.linear.weight if self.impl == "torch" else self.w.T

    @property
    def bias(self) -> Tensor | None:
        return self.linear.bias if self.impl == "torch" else self.b

    def forward(self, x: Tensor) -> Tensor:
        if self.impl == "torch":
            return self.linear(x)
        y = x @ self.w
        return y + self.b if self.b is not None else y
