"""The optimization chapter's 2-D toys (book 11.3-11.8, train_2d): a point in the plane is the only parameter
and the model's output is the objective at that point."""

from collections.abc import Callable, Sequence
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from dlrun.errors import DlrunError
from dlrun.ranges import Min

# name -> f(x1, x2): the functions whose paths the chapter draws.
FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    # 0.1 x1^2 + 2 x2^2: momentum (11.6), AdaGrad (11.7), RMSProp (11.8), and gd's ill-conditioned case.
    "narrow": lambda x1, x2: 0.1 * x1**2 + 2 * x2**2,
    # x1^2 + 2 x2^2: gradient descent and SGD in several variables (11.3, 11.4).
    "bowl": lambda x1, x2: x1**2 + 2 * x2**2,
}


class Point2D(nn.Module):
    """`point` (float64, like the book's Python floats) starts at `start`; forward() returns f(point).

    `grad_noise`: the standard deviation of N(0, 1) noise added to the gradient of every backward pass, the
    book's SGD on the 2-D function (11.4: g += normal(0, 1)); drawn from torch's global generator, which the
    run's seed sets."""

    def __init__(
        self,
        function: Literal["narrow", "bowl"] = "narrow",
        start: Sequence[float] = (-5.0, -2.0),
        grad_noise: Annotated[float, Min(0)] = 0.0,
    ):
        super().__init__()
        if function not in FUNCTIONS:
            raise DlrunError(f"model.function={function!r} is unknown; use one of {', '.join(FUNCTIONS)}")
        start = list(start)
        if len(start) != 2:
            raise DlrunError(f"model.start={start} must be two numbers (x1, x2)")
        if not grad_noise >= 0:
            raise DlrunError(f"model.grad_noise={grad_noise} must be >= 0")
        self.function, self.grad_noise = function, grad_noise
        self.point = nn.Parameter(torch.tensor(start, dtype=torch.float64))
        if grad_noise > 0:
            self.point.register_hook(self._noisy)

    def _noisy(self, grad: Tensor) -> Tensor:
        return grad + self.grad_noise * torch.randn(grad.shape, dtype=grad.dtype, device=grad.device)

    def f(self, x1: Tensor, x2: Tensor) -> Tensor:
        """The objective at (x1, x2), elementwise (the task draws its contours with it)."""
        return FUNCTIONS[self.function](x1, x2)

    def forward(self) -> Tensor:
        return self.f(self.point[0], self.point[1])
