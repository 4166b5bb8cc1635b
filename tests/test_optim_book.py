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


# ------------------------------------------------------------------ learning-rate schedules (11.11)
class BookSquareRoot:
    def __init__(self, lr=0.1):
        self.lr = lr

    def __call__(self, num_update):
        return self.lr * pow(num_update + 1.0, -0.5)


class BookFactor:
    def __init__(self, factor=1, stop_factor_lr=1e-7, base_lr=0.1):
        self.factor, self.stop_factor_lr, self.base_lr = factor, stop_factor_lr, base_lr

    def __call__(self, num_update):
        self.base_lr = max(self.stop_factor_lr, self.base_lr * self.factor)
        return self.base_lr


class BookCosine:
    def __init__(self, max_update, base_lr=0.01, final_lr=0, warmup_steps=0, warmup_begin_lr=0):
        self.base_lr_orig, self.max_update, self.final_lr = base_lr, max_update, final_lr
        self.warmup_steps, self.warmup_begin_lr = warmup_steps, warmup_begin_lr
        self.max_steps = self.max_update - self.warmup_steps

    def get_warmup_lr(self, epoch):
        increase = (self.base_lr_orig - self.warmup_begin_lr) * float(epoch) / float(self.warmup_steps)
        return self.warmup_begin_lr + increase

    def __call__(self, epoch):
        if epoch < self.warmup_steps:
            return self.get_warmup_lr(epoch)
        if epoch <= self.max_update:
            self.base_lr = (
                self.final_lr
                + (self.base_lr_orig - self.final_lr)
                * (1 + math.cos(math.pi * (epoch - self.warmup_steps) / self.max_steps))
                / 2
            )
        return self.base_lr


def lrs(sched_overrides, lr, intervals, compose_cfg, second_group=False):
    """The lr each of `intervals` intervals trains at, stepping the configured scheduler once per interval."""
    cfg = compose_cfg([*sched_overrides, "trainer.max_epochs=30"])
    params = [torch.nn.Parameter(torch.zeros(1))]
    groups = [{"params": params}] + (
        [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 2 * lr}] * second_group
    )
    opt = torch.optim.SGD(groups, lr=lr)
    sched = instantiate(cfg.sched.scheduler)(opt)
    out = []
    for _ in range(intervals):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


def test_square_root_schedule_is_the_books(compose_cfg):
    got = lrs(["sched=square_root"], 0.1, 30, compose_cfg)
    book_sched = BookSquareRoot(lr=0.1)
    assert [g[0] for g in got] == pytest.approx([book_sched(t) for t in range(30)], rel=1e-12)


def test_factor_schedule_is_the_books_with_its_floor(compose_cfg):
    got = lrs(["sched=factor"], 2.0, 70, compose_cfg)  # the book's plot: factor 0.9, floor 0.01, lr 2
    book_sched = BookFactor(factor=0.9, stop_factor_lr=1e-2, base_lr=2.0)
    # The book's callable updates before it returns: its value at t is lr0 * 0.9^(t + 1); dlrun's lr(0) = lr0.
    expected = [2.0] + [book_sched(t) for t in range(69)]
    assert [g[0] for g in got] == pytest.approx(expected, rel=1e-12)
    assert got[-1][0] == pytest.approx(0.01) and min(g[0] for g in got) >= 0.01 - 1e-15


def test_multistep_schedule_halves_at_its_milestones(compose_cfg):
    got = lrs(["sched=multistep"], 0.5, 30, compose_cfg)
    assert [g[0] for g in got] == pytest.approx([0.5] * 15 + [0.25] * 15, rel=1e-12)


def test_cosine_schedule_is_the_books_and_holds_its_final_lr(compose_cfg):
    over = ["sched=d2l_cosine", "sched.scheduler.max_update=20", "sched.scheduler.final_lr=0.01"]
    got = lrs(over, 0.3, 30, compose_cfg, second_group=True)
    book_sched = BookCosine(max_update=20, base_lr=0.3, final_lr=0.01)
    assert [g[0] for g in got] == pytest.approx([book_sched(t) for t in range(30)], rel=1e-12)
    assert got[0][0] == pytest.approx(0.3) and got[-1][0] == pytest.approx(0.01)
    # A second parameter group follows the same formula from its own lr.
    book_sched = BookCosine(max_update=20, base_lr=0.6, final_lr=0.01)
    assert [g[1] for g in got] == pytest.approx([book_sched(t) for t in range(30)], rel=1e-12)


def test_warmup_cosine_never_trains_at_lr_zero(compose_cfg):
    over = ["sched=d2l_cosine", "sched.scheduler.max_update=20", "sched.scheduler.final_lr=0.01"]
    got = [g[0] for g in lrs([*over, "sched.scheduler.warmup=5"], 0.3, 30, compose_cfg)]
    book_sched = BookCosine(20, warmup_steps=5, base_lr=0.3, final_lr=0.01)
    # The ramp: the book's value at the end of each warm-up interval (0.06, 0.12, ..., 0.3); then the book's.
    assert got[:5] == pytest.approx([book_sched.get_warmup_lr(t + 1) for t in range(5)], rel=1e-12)
    assert got[5:] == pytest.approx([book_sched(t) for t in range(5, 30)], rel=1e-12)
    assert min(got) > 0 and book_sched(0) == 0  # the book's own formula starts at lr 0


def test_schedules_step_per_update_too(compose_cfg):
    cfg = compose_cfg(["sched=square_root", "sched.interval=step"])
    assert cfg.sched.interval == "step"
    got = lrs(["sched=square_root", "sched.interval=step"], 0.1, 500, compose_cfg)
    assert got[499][0] == pytest.approx(0.1 / math.sqrt(500), rel=1e-12)


@pytest.mark.parametrize("sched", ["square_root", "factor", "multistep", "d2l_cosine"])
def test_schedule_state_resumes(sched, compose_cfg):
    """k intervals, save the scheduler's state, load it into a fresh one: the lrs go on as without a break."""
    overrides = [f"sched={sched}"] + (["sched.scheduler.max_update=10"] if sched == "d2l_cosine" else [])
    cfg = compose_cfg(overrides)
    whole = lrs(overrides, 0.3, 20, compose_cfg)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    sched_a = instantiate(cfg.sched.scheduler)(opt)
    for _ in range(7):
        opt.step()
        sched_a.step()
    state = {"optim": opt.state_dict(), "sched": sched_a.state_dict()}
    # As the engine resumes: build both, then load the optimizer's state, then the scheduler's.
    fresh = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    sched_b = instantiate(cfg.sched.scheduler)(fresh)
    fresh.load_state_dict(state["optim"])
    sched_b.load_state_dict(state["sched"])
    resumed = []
    for _ in range(13):
        resumed.append(fresh.param_groups[0]["lr"])
        fresh.step()
        sched_b.step()
    assert resumed == pytest.approx([g[0] for g in whole[7:]], rel=1e-12)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sched=factor", "sched.scheduler.factor=1.5"], "sched.scheduler.factor=1.5 must lie in (0, 1]"),
        (["sched=d2l_cosine", "sched.scheduler.warmup=30"], "sched.scheduler.warmup=30, max_update=30"),
        (["sched=d2l_cosine", "sched.scheduler.final_lr=-1"], "sched.scheduler.final_lr=-1"),
    ],
)
def test_bad_schedule_options_name_the_key(overrides, message, compose_cfg):
    cfg = compose_cfg([*overrides, "trainer.max_epochs=30"])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    with pytest.raises(DlrunError) as err:
        instantiate(cfg.sched.scheduler)(opt)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_lr_schedule_experiments(compose_cfg):
    """The book's LeNet (ReLU, max-pool, PyTorch's default init) on Fashion-MNIST, batch 256, 30 epochs."""
    expected = {  # name -> (sched, optim.lr)
        "constant": ("none", 0.3),
        "square_root": ("square_root", 0.1),
        "multistep": ("multistep", 0.5),
        "cosine": ("d2l_cosine", 0.3),
        "warmup_cosine": ("d2l_cosine", 0.3),
    }
    for name, (sched, lr) in expected.items():
        cfg = compose_cfg([f"experiment=d2l/lr_schedule_{name}"])
        assert cfg.hydra.runtime.choices.sched == sched and cfg.optim.lr == lr, name
        assert (cfg.model.activation, cfg.model.pooling, cfg.model.init) == ("relu", "max", "default")
        assert cfg.data.batch_size == 256 and cfg.trainer.max_epochs == 30 and cfg.sched.interval == "epoch"
        assert set(cfg.book.metrics) == {"train/loss", "train/acc", "val/acc"} and cfg.book.section == "11.11"
    cfg = compose_cfg(["experiment=d2l/lr_schedule_warmup_cosine"])
    assert (cfg.sched.scheduler.max_update, cfg.sched.scheduler.warmup, cfg.sched.scheduler.final_lr) == (
        20,
        5,
        0.01,
    )
    assert list(compose_cfg(["experiment=d2l/lr_schedule_multistep"]).sched.scheduler.milestones) == [15, 30]
