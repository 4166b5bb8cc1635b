"""The book's optimizers (ch. 11) and learning-rate schedules: updates, torch equivalence, resume, errors."""

import io
import math

import pytest
import torch
from hydra.utils import instantiate

from dlrun.errors import DlrunError
from dlrun.optim import book

BOOK_OPTIMIZERS = [
    "d2l_sgd",
    "d2l_momentum",
    "d2l_adagrad",
    "d2l_rmsprop",
    "d2l_adadelta",
    "d2l_adam",
    "yogi",
]
TORCH_OPTIMIZERS = ["sgd", "adam", "adamw", "adagrad", "rmsprop", "adadelta"]


def problem(seed=0, n=32):
    """A tiny least-squares problem: (X, y) and a fresh linear model with the book's w ~ N(0, 0.01), b = 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    return x, y


def model(seed=1):
    torch.manual_seed(seed)
    m = torch.nn.Linear(5, 1)
    torch.nn.init.normal_(m.weight, std=0.01)
    torch.nn.init.zeros_(m.bias)
    return m


def train(m, opt, x, y, steps, batch=8, start=0):
    for i in range(start, start + steps):
        j = (i * batch) % len(x)
        loss = ((m(x[j : j + batch]) - y[j : j + batch]) ** 2 / 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in m.parameters()]


# ------------------------------------------------------------ the book's updates, as the book writes them
def book_sgd(params, states, hp):
    for p in params:
        p.data.sub_(hp["lr"] * p.grad)


def book_momentum(params, states, hp):
    for p, v in zip(params, states, strict=True):
        v[:] = hp["momentum"] * v + p.grad
        p[:] -= hp["lr"] * v


def book_adagrad(params, states, hp):
    for p, s in zip(params, states, strict=True):
        s[:] += torch.square(p.grad)
        p[:] -= hp["lr"] * p.grad / torch.sqrt(s + 1e-6)


def book_rmsprop(params, states, hp):
    for p, s in zip(params, states, strict=True):
        s[:] = hp["gamma"] * s + (1 - hp["gamma"]) * torch.square(p.grad)
        p[:] -= hp["lr"] * p.grad / torch.sqrt(s + 1e-6)


def book_adadelta(params, states, hp):
    rho, eps = hp["rho"], 1e-5
    for p, (s, delta) in zip(params, states, strict=True):
        s[:] = rho * s + (1 - rho) * torch.square(p.grad)
        g = (torch.sqrt(delta + eps) / torch.sqrt(s + eps)) * p.grad
        p[:] -= g
        delta[:] = rho * delta + (1 - rho) * g * g


def _book_adam(params, states, hp, yogi):
    beta1, beta2, eps = 0.9, 0.999, 1e-3 if yogi else 1e-6
    for p, (v, s) in zip(params, states, strict=True):
        v[:] = beta1 * v + (1 - beta1) * p.grad
        if yogi:
            s[:] = s + (1 - beta2) * torch.sign(torch.square(p.grad) - s) * torch.square(p.grad)
        else:
            s[:] = beta2 * s + (1 - beta2) * torch.square(p.grad)
        v_bias_corr = v / (1 - beta1 ** hp["t"])
        s_bias_corr = s / (1 - beta2 ** hp["t"])
        p[:] -= hp["lr"] * v_bias_corr / (torch.sqrt(s_bias_corr) + eps)
    hp["t"] += 1


def book_adam(params, states, hp):
    _book_adam(params, states, hp, yogi=False)


def book_yogi(params, states, hp):
    _book_adam(params, states, hp, yogi=True)


def zeros(params):
    return [torch.zeros_like(p) for p in params]


def pairs(params):
    return [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]


# name -> (the book's update, its state, its hyperparameters, dlrun's optimizer with the same settings)
BOOK = {
    "sgd": (book_sgd, zeros, {"lr": 0.05}, lambda ps: book.SGD(ps, lr=0.05)),
    "momentum": (
        book_momentum,
        zeros,
        {"lr": 0.02, "momentum": 0.5},
        lambda ps: book.Momentum(ps, 0.02, 0.5),
    ),
    "adagrad": (book_adagrad, zeros, {"lr": 0.1}, lambda ps: book.AdaGrad(ps, lr=0.1)),
    "rmsprop": (
        book_rmsprop,
        zeros,
        {"lr": 0.01, "gamma": 0.9},
        lambda ps: book.RMSProp(ps, 0.01, gamma=0.9),
    ),
    "adadelta": (book_adadelta, pairs, {"rho": 0.9}, lambda ps: book.Adadelta(ps, rho=0.9)),
    "adam": (book_adam, pairs, {"lr": 0.01, "t": 1}, lambda ps: book.Adam(ps, lr=0.01)),
    "yogi": (book_yogi, pairs, {"lr": 0.01, "t": 1}, lambda ps: book.Yogi(ps, lr=0.01)),
}


@pytest.mark.parametrize("name", BOOK)
def test_the_books_update(name):
    """20 steps of dlrun's optimizer == 20 steps of the book's own function, bit for bit."""
    update, init_states, hp, make = BOOK[name]
    x, y = problem()
    ours = model()
    theirs = model()
    opt = make(ours.parameters())
    # The book's functions update (w, b) of shape (5, 1) and (1,), as train_ch11 holds them.
    w = theirs.weight.detach().T.clone().requires_grad_()
    b = theirs.bias.detach().clone().requires_grad_()
    states = init_states([w, b])
    for i in range(20):
        xb, yb = x[i % 4 * 8 : i % 4 * 8 + 8], y[i % 4 * 8 : i % 4 * 8 + 8]
        loss = ((ours(xb) - yb) ** 2 / 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ((xb @ w + b - yb) ** 2 / 2).mean().backward()
        with torch.no_grad():
            update([w, b], states, hp)
        w.grad, b.grad = None, None
    assert torch.equal(ours.weight.detach(), w.detach().T) and torch.equal(ours.bias.detach(), b.detach())
    assert not torch.equal(ours.weight.detach(), model().weight)  # it moved


# ------------------------------------------------------------------ against torch's own
def trajectories(ours, theirs, steps=30):
    x, y = problem()
    a, b = model(), model()
    return train(a, ours(a.parameters()), x, y, steps), train(b, theirs(b.parameters()), x, y, steps)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda ps: book.SGD(ps, lr=0.05), lambda ps: torch.optim.SGD(ps, lr=0.05)),
        (lambda ps: book.Momentum(ps, 0.01, 0.9), lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9)),
        # AdaGrad and RMSProp agree with torch where the eps placement cannot matter: eps = 0.
        (lambda ps: book.AdaGrad(ps, lr=0.1, eps=0), lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=0)),
        (
            lambda ps: book.RMSProp(ps, lr=0.01, gamma=0.9, eps=0),
            lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=0),
        ),
        (
            lambda ps: book.Adadelta(ps, rho=0.9, eps=1e-5),
            lambda ps: torch.optim.Adadelta(ps, rho=0.9, eps=1e-5),
        ),
        (
            lambda ps: book.Adadelta(ps, rho=0.9, eps=1e-5, lr=0.5),
            lambda ps: torch.optim.Adadelta(ps, lr=0.5, rho=0.9, eps=1e-5),
        ),
        (lambda ps: book.Adam(ps, lr=0.01, eps=1e-6), lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-6)),
    ],
    ids=["sgd", "momentum", "adagrad_eps0", "rmsprop_eps0", "adadelta", "adadelta_lr", "adam"],
)
def test_same_trajectory_as_torch_where_the_formulas_agree(ours, theirs):
    a, b = trajectories(ours, theirs)
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "ours, theirs, rate",
    [
        (
            lambda ps: book.AdaGrad(ps, lr=0.1, eps=0.01),
            lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=0.01),
            1,
        ),
        (
            lambda ps: book.RMSProp(ps, lr=0.1, gamma=0.9, eps=0.01),
            lambda ps: torch.optim.RMSprop(ps, lr=0.1, alpha=0.9, eps=0.01),
            0.1,
        ),
    ],
    ids=["adagrad", "rmsprop"],
)
def test_eps_inside_the_root_differs_from_torch(ours, theirs, rate):
    """First step from s = 0: the book's lr g / sqrt(r g^2 + eps), torch's lr g / (sqrt(r g^2) + eps)."""
    g = torch.tensor([0.01, 0.1, 1.0, 10.0])
    a, b = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))
    for p, make in ((a, ours), (b, theirs)):
        p.grad = g.clone()
        make([p]).step()
    torch.testing.assert_close(a.detach(), -0.1 * g / (rate * g**2 + 0.01).sqrt())
    torch.testing.assert_close(b.detach(), -0.1 * g / ((rate * g**2).sqrt() + 0.01))
    assert not torch.allclose(a, b, rtol=1e-3)


def test_book_adadelta_has_no_learning_rate():
    """Its lr defaults to 1, the book's update; torch's lr scales the whole step."""
    x, y = problem()
    a, b = model(), model()
    start = a.weight.detach().clone()
    train(a, book.Adadelta(a.parameters()), x, y, 1)
    train(b, book.Adadelta(b.parameters(), lr=0.5), x, y, 1)
    torch.testing.assert_close(b.weight.detach() - start, 0.5 * (a.weight.detach() - start))


def test_yogi_moves_its_second_moment_by_a_fixed_fraction_of_g2():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = book.Yogi([p], lr=0.01, betas=(0.9, 0.5))
    for g in ([1.0, 2.0, 0.5], [0.1, 4.0, 0.5]):
        p.grad = torch.tensor(g)
        opt.step()
    # s1 = 0 + 0.5 * g1^2; s2 = s1 + 0.5 * sign(g2^2 - s1) * g2^2
    s1 = 0.5 * torch.tensor([1.0, 4.0, 0.25])
    g2 = torch.tensor([0.01, 16.0, 0.25])
    torch.testing.assert_close(opt.state[p]["s"], s1 + 0.5 * torch.sign(g2 - s1) * g2)


# ------------------------------------------------------------------ configs, resume, errors
def build(name, params, compose_cfg):
    return instantiate(compose_cfg([f"optim={name}"]).optim)(params)


@pytest.mark.parametrize("name", BOOK_OPTIMIZERS + TORCH_OPTIMIZERS)
def test_state_dict_round_trip_resumes_exactly(name, compose_cfg):
    """N steps == k steps, save model and optimizer, load both into fresh ones, N - k steps."""
    x, y = problem()
    whole = model()
    expected = train(whole, build(name, whole.parameters(), compose_cfg), x, y, 12)

    first = model()
    opt = build(name, first.parameters(), compose_cfg)
    train(first, opt, x, y, 5)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = model(seed=7)  # different start: everything must come from the checkpoint
    resumed.load_state_dict(saved["model"])
    opt = build(name, resumed.parameters(), compose_cfg)
    opt.load_state_dict(saved["optim"])
    got = train(resumed, opt, x, y, 7, start=5)
    for p, q in zip(expected, got, strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda ps: book.SGD(ps, lr=-1), "optim.lr=-1 must be >= 0"),
        (lambda ps: book.Momentum(ps, lr=0.1, momentum=1.0), "optim.momentum=1.0 must lie in [0, 1)"),
        (lambda ps: book.AdaGrad(ps, lr=0.1, eps=-1e-6), "optim.eps=-1e-06 must be >= 0"),
        (lambda ps: book.RMSProp(ps, lr=0.1, gamma=-0.1), "optim.gamma=-0.1 must lie in [0, 1)"),
        (lambda ps: book.Adadelta(ps, rho=1.5), "optim.rho=1.5 must lie in [0, 1)"),
        (lambda ps: book.Adam(ps, lr=0.1, betas=(0.9, 1.0)), "optim.betas[1]=1.0 must lie in [0, 1)"),
        (lambda ps: book.Yogi(ps, lr=float("nan")), "optim.lr=nan must be >= 0"),
        (lambda ps: book.Adam(ps, lr=0.1, betas=(0.9,)), "optim.betas=[0.9] must be two numbers"),
    ],
)
def test_bad_options_name_the_key(make, message):
    with pytest.raises(DlrunError) as err:
        make(model().parameters())
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_every_optimizer_config_builds(compose_cfg):
    for name in BOOK_OPTIMIZERS + TORCH_OPTIMIZERS:
        opt = build(name, model().parameters(), compose_cfg)
        assert isinstance(opt, torch.optim.Optimizer) and math.isfinite(opt.param_groups[0]["lr"]), name
