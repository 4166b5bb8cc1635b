"""Nadaraya-Watson kernel regression (book 10.2): the toy data, the fixed and the learned kernel."""

import functools

import pytest
import torch

from dlrun.data.kernel_regression import KernelRegressionData, truth
from dlrun.engine.trainer import Trainer
from dlrun.models.nadaraya_watson import NadarayaWatson
from dlrun.tasks.regression import RegressionTask


def test_data_is_the_books_toy_set():
    data = KernelRegressionData(seed=3)
    x, y = data.x_train[:, 0], data.y_train[:, 0]
    assert x.shape == (50,) and torch.equal(x, x.sort().values) and 0 <= x.min() and x.max() < 5
    assert 0.3 < (y - truth(x)).std() < 0.7  # noise N(0, 0.5^2)
    torch.testing.assert_close(data.x_val[:, 0], torch.arange(0, 5, 0.1))
    torch.testing.assert_close(data.y_val[:, 0], 2 * torch.sin(data.x_val[:, 0]) + data.x_val[:, 0] ** 0.8)
    assert data.model_kwargs == {"keys": x.tolist(), "values": y.tolist()}
    assert torch.equal(KernelRegressionData(seed=3).x_train, data.x_train)


def test_fixed_kernel_and_leave_one_out():
    data = KernelRegressionData()
    model = NadarayaWatson(**data.model_kwargs, w_init=1.0).eval()
    keys, values = data.x_train[:, 0], data.y_train[:, 0]
    queries = data.x_val[:, 0]
    weights = torch.softmax(-((queries[:, None] - keys[None, :]) ** 2) / 2, dim=1)
    torch.testing.assert_close(model(data.x_val)[:, 0], weights @ values)
    assert model.attention_weights.shape == (50, 50)

    model.train()  # training queries are the keys: each leaves itself out
    prediction = model(data.x_train)[:, 0]
    assert torch.all(model.attention_weights.diagonal() == 0)
    for i in (0, 17, 49):
        others = torch.arange(50) != i
        w = torch.softmax(-((keys[i] - keys[others]) ** 2) / 2, dim=0)
        torch.testing.assert_close(prediction[i], w @ values[others])


def test_learned_bandwidth_takes_the_books_steps(tmp_path):
    """The engine's mean loss with lr 25 = the book's summed loss with lr 0.5 (50 examples, full batch)."""
    data = KernelRegressionData()
    torch.manual_seed(0)
    model = NadarayaWatson(**data.model_kwargs)
    book = NadarayaWatson(**data.model_kwargs)
    book.load_state_dict(model.state_dict())
    trainer = Trainer(device="cpu", max_epochs=5, progress_bar=False, checkpoint=False, curves=False)
    summary = trainer.fit(
        model,
        RegressionTask(loss="mse"),
        data,
        functools.partial(torch.optim.SGD, lr=25),
        run_dir=tmp_path,
    )
    optimizer = torch.optim.SGD(book.parameters(), lr=0.5)
    book.train()
    for _ in range(5):
        optimizer.zero_grad()
        ((book(data.x_train) - data.y_train) ** 2).sum().backward()
        optimizer.step()
    torch.testing.assert_close(model.w, book.w)
    history = summary["history"]
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    fixed = NadarayaWatson(**data.model_kwargs, w_init=1.0).eval()
    with torch.no_grad():
        fixed_val = float(((fixed(data.x_val) - data.y_val) ** 2).mean())
    assert history[-1]["val/loss"] < fixed_val  # the learned kernel fits the truth better than w = 1


def test_experiments_have_the_books_settings(compose_cfg):
    cfg = compose_cfg(["experiment=d2l/nadaraya_watson"])
    assert (cfg.optim.lr, cfg.trainer.max_epochs, cfg.data.batch_size, cfg.task.loss) == (25, 5, 50, "mse")
    assert cfg.model.w_init is None
    cfg = compose_cfg(["experiment=d2l/nadaraya_watson_fixed"])
    assert (cfg.optim.lr, cfg.model.w_init) == (0.0, 1.0)


def test_too_few_pairs_is_one_clear_error():
    from dlrun.errors import DlrunError

    with pytest.raises(DlrunError, match="give >= 2 pairs"):
        NadarayaWatson([1.0], [2.0])
