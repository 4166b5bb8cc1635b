"""The optimizers of the book's chapter 11, each with the book's exact update (its eps placement, bias
correction and state), as torch.optim.Optimizer subclasses: they checkpoint and resume like torch's own.

g is a parameter's gradient, t the number of updates taken so far (1 on the first). Where torch has the
same algorithm, the two agree except:
- AdaGrad, RMSProp: the book divides by sqrt(s + eps), torch by sqrt(s) + eps (equal at eps = 0);
- Adadelta: the book has no learning rate; torch's `lr` scales the step, and lr=1 (its default) is the book;
- Adam: the same formula (torch rounds differently); the book's eps is 1e-6, torch's default 1e-8;
- Yogi: not in torch.
"""

from collections.abc import Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from dlrun.errors import DlrunError


def _at_least_zero(name: str, value: float) -> float:
    if not value >= 0:  # also rejects NaN
        raise DlrunError(f"optim.{name}={value} must be >= 0")
    return value


def _fraction(name: str, value: float) -> float:
    if not 0 <= value < 1:
        raise DlrunError(f"optim.{name}={value} must lie in [0, 1)")
    return value


def _betas(betas: Iterable[float]) -> tuple[float, float]:
    betas = tuple(betas)
    if len(betas) != 2:
        raise DlrunError(f"optim.betas={list(betas)} must be two numbers (beta1, beta2)")
    return _fraction("betas[0]", betas[0]), _fraction("betas[1]", betas[1])


class BookOptimizer(Optimizer):
    """Loops over the parameters that have a gradient; subclasses write one parameter's update."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise DlrunError(f"{type(self).__name__} does not support sparse gradients")
                self.update(p, p.grad, self.state[p], group)
        return loss

    def update(self, p: Tensor, g: Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError


class SGD(BookOptimizer):
    """Minibatch SGD (11.5): p -= lr g."""

    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": _at_least_zero("lr", lr)})

    def update(self, p, g, state, group):
        p.sub_(group["lr"] * g)


class Momentum(BookOptimizer):
    """SGD with momentum (11.6): v = momentum v + g; p -= lr v (v starts at 0)."""

    def __init__(self, params, lr: float, momentum: float = 0.9):
        super().__init__(
            params, {"lr": _at_least_zero("lr", lr), "momentum": _fraction("momentum", momentum)}
        )

    def update(self, p, g, state, group):
        if not state:
            state["v"] = torch.zeros_like(p)
        v = state["v"]
        v.mul_(group["momentum"]).add_(g)
        p.sub_(group["lr"] * v)


class AdaGrad(BookOptimizer):
    """AdaGrad (11.7): s += g^2; p -= lr g / sqrt(s + eps), eps inside the square root."""

    def __init__(self, params, lr: float, eps: float = 1e-6):
        super().__init__(params, {"lr": _at_least_zero("lr", lr), "eps": _at_least_zero("eps", eps)})

    def update(self, p, g, state, group):
        if not state:
            state["s"] = torch.zeros_like(p)
        s = state["s"]
        s.add_(g.square())
        p.sub_(group["lr"] * g / (s + group["eps"]).sqrt())


class RMSProp(BookOptimizer):
    """RMSProp (11.8): s = gamma s + (1 - gamma) g^2; p -= lr g / sqrt(s + eps), eps inside the root."""

    def __init__(self, params, lr: float, gamma: float = 0.9, eps: float = 1e-6):
        defaults = {
            "lr": _at_least_zero("lr", lr),
            "gamma": _fraction("gamma", gamma),
            "eps": _at_least_zero("eps", eps),
        }
        super().__init__(params, defaults)

    def update(self, p, g, state, group):
        if not state:
            state["s"] = torch.zeros_like(p)
        s, gamma = state["s"], group["gamma"]
        s.mul_(gamma).add_((1 - gamma) * g.square())
        p.sub_(group["lr"] * g / (s + group["eps"]).sqrt())


class Adadelta(BookOptimizer):
    """Adadelta (11.9): s = rho s + (1 - rho) g^2; g' = sqrt(delta + eps) / sqrt(s + eps) g; p -= lr g';
    delta = rho delta + (1 - rho) g'^2. The book has no learning rate: lr=1 (torch's default) is the book."""

    def __init__(self, params, rho: float = 0.9, eps: float = 1e-5, lr: float = 1.0):
        defaults = {
            "lr": _at_least_zero("lr", lr),
            "rho": _fraction("rho", rho),
            "eps": _at_least_zero("eps", eps),
        }
        super().__init__(params, defaults)

    def update(self, p, g, state, group):
        if not state:
            state["s"], state["delta"] = torch.zeros_like(p), torch.zeros_like(p)
        s, delta, rho, eps = state["s"], state["delta"], group["rho"], group["eps"]
        s.mul_(rho).add_((1 - rho) * g.square())
        g = (delta + eps).sqrt() / (s + eps).sqrt() * g
        p.sub_(group["lr"] * g)
        delta.mul_(rho).add_((1 - rho) * g * g)


class Adam(BookOptimizer):
    """Adam (11.10): v = beta1 v + (1 - beta1) g; s = beta2 s + (1 - beta2) g^2;
    p -= lr v/(1 - beta1^t) / (sqrt(s/(1 - beta2^t)) + eps), eps outside the root."""

    def __init__(self, params, lr: float, betas: Iterable[float] = (0.9, 0.999), eps: float = 1e-6):
        defaults = {"lr": _at_least_zero("lr", lr), "betas": _betas(betas), "eps": _at_least_zero("eps", eps)}
        super().__init__(params, defaults)

    def second_moment(self, s: Tensor, g: Tensor, beta2: float) -> None:
        s.mul_(beta2).add_((1 - beta2) * g.square())

    def update(self, p, g, state, group):
        if not state:
            state["t"] = 0
            state["v"], state["s"] = torch.zeros_like(p), torch.zeros_like(p)
        state["t"] += 1
        t, v, s = state["t"], state["v"], state["s"]
        beta1, beta2 = group["betas"]
        v.mul_(beta1).add_((1 - beta1) * g)
        self.second_moment(s, g, beta2)
        v_hat = v / (1 - beta1**t)
        s_hat = s / (1 - beta2**t)
        p.sub_(group["lr"] * v_hat / (s_hat.sqrt() + group["eps"]))


class Yogi(Adam):
    """Yogi (11.10.3): Adam whose second moment moves by (1 - beta2) g^2 towards g^2,
    s = s + (1 - beta2) sign(g^2 - s) g^2; the book's eps is 1e-3."""

    def __init__(self, params, lr: float, betas: Iterable[float] = (0.9, 0.999), eps: float = 1e-3):
        super().__init__(params, lr, betas, eps)

    def second_moment(self, s: Tensor, g: Tensor, beta2: float) -> None:
        g2 = g.square()
        s.add_((1 - beta2) * torch.sign(g2 - s) * g2)
