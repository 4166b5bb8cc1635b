"""Regression (book chapters 3-5): generated data, Kaggle House preprocessing, task, model, runs."""

import csv
import json
import logging
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from dlrun.data.synthetic import HighDimLinearData, PolynomialData, SyntheticLinearData
from dlrun.data.tabular import CsvData, KaggleHouseData
from dlrun.engine import checkpoint
from dlrun.engine.contracts import FitContext
from dlrun.engine.metrics import MetricSums
from dlrun.errors import DlrunError
from dlrun.models.linear_regression import LinearRegression
from dlrun.run import run
from dlrun.tasks.regression import RegressionTask


def least_squares(x: torch.Tensor, y: torch.Tensor, bias: bool = True) -> torch.Tensor:
    x = x.double()
    if bias:
        x = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    return torch.linalg.lstsq(x, y.double()).solution.reshape(-1)


# ------------------------------------------------------------------ synthetic data
def test_synthetic_linear_data():
    data = SyntheticLinearData()
    assert data.x_train.shape == (1000, 2) and data.y_train.shape == (1000, 1)
    assert data.x_val.shape == (1000, 2) and data.y_val.shape == (1000, 1)
    assert data.x_train.dtype == data.y_train.dtype == torch.float32
    assert data.model_kwargs == {"in_features": 2}
    assert not torch.equal(data.x_train, data.x_val)  # validation is a fresh draw
    clean = SyntheticLinearData(noise=0.0)
    solution = least_squares(clean.x_train, clean.y_train)
    assert torch.allclose(solution, torch.tensor([2.0, -3.4, 4.2], dtype=torch.float64), atol=1e-5)
    # The noise is the book's 0.01.
    residual = data.y_train - (data.x_train @ data.true_w.reshape(-1, 1) + data.true_b)
    assert 0.008 < residual.std().item() < 0.012
    assert torch.equal(SyntheticLinearData(seed=3).x_train, SyntheticLinearData(seed=3).x_train)
    assert not torch.equal(SyntheticLinearData(seed=3).x_train, data.x_train)


@pytest.mark.parametrize("num_features", [2, 4, 20])
def test_polynomial_data(num_features):
    data = PolynomialData(num_features=num_features)
    assert data.x_train.shape == (100, num_features) and data.y_train.shape == (100, 1)
    assert data.x_val.shape == (100, num_features) and data.y_val.shape == (100, 1)
    assert data.model_kwargs == {"in_features": num_features}
    x = data.x_train[:, 1]
    assert torch.equal(data.x_train[:, 0], torch.ones(100))
    if num_features >= 4:
        assert torch.allclose(data.x_train[:, 2], x**2 / 2) and torch.allclose(data.x_train[:, 3], x**3 / 6)


def test_polynomial_true_coefficients_are_recovered_without_noise():
    clean = PolynomialData(num_features=4, noise=0.0)
    solution = least_squares(clean.x_train, clean.y_train, bias=False)
    assert torch.allclose(solution, torch.tensor([5.0, 1.2, -3.4, 5.6], dtype=torch.float64), atol=1e-4)
    assert torch.equal(clean.true_w, torch.tensor([5.0, 1.2, -3.4, 5.6]))
    with pytest.raises(DlrunError, match="num_features=21"):
        PolynomialData(num_features=21)
    assert PolynomialData(num_features=21, max_degree=21).x_train.shape == (100, 21)


def test_high_dim_linear_data():
    data = HighDimLinearData()
    assert data.x_train.shape == (20, 200) and data.y_train.shape == (20, 1)
    assert data.x_val.shape == (100, 200) and data.y_val.shape == (100, 1)
    assert data.model_kwargs == {"in_features": 200}
    clean = HighDimLinearData(num_train=400, noise=0.0)
    solution = least_squares(clean.x_train, clean.y_train)
    expected = torch.cat([torch.full((200,), 0.01), torch.tensor([0.05])]).double()
    assert torch.allclose(solution, expected, atol=1e-5)


# ------------------------------------------------------------------ CSV tables
def write_csv(path: Path, rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.fixture
def house(tmp_path):
    train = write_csv(
        tmp_path / "train.csv",
        [
            ["Id", "Area", "Zone", "Price"],
            [1, 100, "a", 200],
            [2, "NA", "b", 300],
            [3, 300, "NA", 400],
            [4, 500, "a", 500],
        ],
    )
    test = write_csv(
        tmp_path / "test.csv",
        [["Id", "Area", "Zone"], [7, 1300, "c"], [8, "", "b"], [9, 100, ""]],
    )
    return train, test


def test_csv_preprocessing_is_the_books(house):
    train, test = house
    data = CsvData(train, "Price", test_path=test, id_column="Id", val_fraction=0.0, batch_size=2)
    assert data.feature_names == ["Area", "Zone_a", "Zone_b", "Zone_nan"]
    assert data.model_kwargs == {"in_features": 4}
    mean, std = 300.0, math.sqrt(((100 - 300) ** 2 + 0 + (500 - 300) ** 2) / 2)  # sample std of 100, 300, 500
    expected = torch.tensor(
        [
            [(100 - mean) / std, 1, 0, 0],
            [0.0, 0, 1, 0],  # a missing number becomes 0 after standardising
            [(300 - mean) / std, 0, 0, 1],  # a missing category gets its own column
            [(500 - mean) / std, 1, 0, 0],
        ]
    )
    assert torch.allclose(data.x_all, expected)
    assert torch.equal(data.y_all, torch.tensor([[200.0], [300.0], [400.0], [500.0]]))
    # The test file uses the training statistics and categories: no leakage, same columns.
    assert data.x_test.shape == (3, 4) and data.test_ids == ["7", "8", "9"]
    assert data.x_test[0, 0].item() == pytest.approx((1300 - mean) / std)
    assert data.x_test[0, 1:].tolist() == [0, 0, 0]  # a category unseen in training: all zeros
    assert data.x_test[1].tolist() == [0, 0, 1, 0]
    assert data.x_test[2].tolist() == pytest.approx([(100 - mean) / std, 0, 0, 1])
    # val_fraction=0: validation on the training rows (the book's final train_and_pred).
    assert torch.equal(data.x_train, data.x_val) and len(data.y_train) == 4


def test_csv_hold_out_split_is_seeded_and_disjoint(tmp_path):
    rows = [["x", "kind", "y"]] + [[i, "ab"[i % 2], 2 * i] for i in range(50)]
    path = write_csv(tmp_path / "t.csv", rows)
    data = CsvData(path, "y", val_fraction=0.2, seed=1)
    assert len(data.y_train) == 40 and len(data.y_val) == 10 and len(data.y_all) == 50
    seen = sorted(data.y_train.reshape(-1).tolist() + data.y_val.reshape(-1).tolist())
    assert seen == [2.0 * i for i in range(50)]
    assert torch.equal(CsvData(path, "y", seed=1).y_val, data.y_val)
    assert not torch.equal(CsvData(path, "y", seed=2).y_val, data.y_val)


def test_bad_csv_input_gives_one_clear_line(tmp_path, house):
    train, _ = house
    with pytest.raises(DlrunError, match=r"target column 'Cost' not in .*train\.csv \(columns: Id, Area"):
        CsvData(train, "Cost")
    bad = write_csv(tmp_path / "bad.csv", [["a", "y"], [1, 2], [2, "cheap"]])
    with pytest.raises(
        DlrunError, match=r"target column 'y' in .*bad\.csv must be numeric.*line 3 has 'cheap'"
    ):
        CsvData(bad, "y")
    with pytest.raises(DlrunError, match=r"nowhere\.csv not found"):
        CsvData(tmp_path / "nowhere.csv", "y")
    ragged = write_csv(tmp_path / "ragged.csv", [["a", "y"], [1, 2], [2]])
    with pytest.raises(DlrunError, match=r"ragged\.csv line 3 has 1 fields, the header has 2"):
        CsvData(ragged, "y")
    other = write_csv(tmp_path / "other.csv", [["Id", "Area"], [1, 2]])
    with pytest.raises(DlrunError, match=r"other\.csv lacks the training columns Zone"):
        CsvData(train, "Price", test_path=other, id_column="Id")
    with pytest.raises(DlrunError, match=r"data\.val_fraction=1\.5 must lie in \[0, 1\)"):
        CsvData(train, "Price", val_fraction=1.5)


def test_kaggle_house_missing_files(tmp_path, monkeypatch):
    with pytest.raises(DlrunError) as err:
        KaggleHouseData(tmp_path, download=False)
    message = str(err.value)
    assert str(tmp_path) in message and "kaggle_house_pred_train.csv" in message
    assert "kaggle_house_pred_test.csv" in message and "\n" not in message

    def offline(url, path, sha1=None, timeout=30.0):
        assert url.startswith("http://d2l-data.s3-accelerate.amazonaws.com/kaggle_house_pred_")
        assert sha1 in (
            "585e9cc93e70b39160e7921475f9bcd7d31219ce",
            "fa19780a7b011d9b009e8bff8e99922a8ee2eb90",
        )
        raise OSError("network is unreachable")

    monkeypatch.setattr("dlrun.data.tabular.download", offline)
    with pytest.raises(DlrunError, match="downloading failed \\(network is unreachable\\)"):
        KaggleHouseData(tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


KAGGLE_DIR = Path(os.environ.get("DLRUN_DATA_DIR", "data"))


@pytest.mark.skipif(
    not (KAGGLE_DIR / "kaggle_house_pred_train.csv").is_file(), reason="set DLRUN_DATA_DIR to the Kaggle CSVs"
)
def test_kaggle_house_real_files():
    data = KaggleHouseData(KAGGLE_DIR, download=False)
    assert data.x_all.shape == (1460, 330) and data.x_test.shape == (1459, 330)
    assert data.x_train.shape == (1168, 330) and data.x_val.shape == (292, 330)
    assert data.test_ids[0] == "1461" and data.model_kwargs == {"in_features": 330}
    assert torch.isfinite(data.x_all).all() and torch.isfinite(data.x_test).all()


# ------------------------------------------------------------------ task and model
def batch_metrics(task, batches):
    sums = MetricSums()
    for batch in batches:
        _, stats, count = task.validation_step(nn.Identity(), batch)
        assert all(not v.requires_grad for v in stats.values()) and isinstance(count, int)
        sums.add(stats, count)
    return task.compute(*sums.read())


def test_regression_metrics_aggregate_exactly_over_batches():
    generator = torch.Generator().manual_seed(0)
    y = torch.rand(9, 1, generator=generator) * 1e5 + 10
    y_hat = y * torch.exp(0.3 * torch.randn(9, 1, generator=generator))
    y_hat[0] = -5.0  # clamped to 1 before the log
    task = RegressionTask(loss="mse", log_rmse=True)
    whole = batch_metrics(task, [(y_hat, y)])
    halves = batch_metrics(task, [(y_hat[:4], y[:4]), (y_hat[4:], y[4:])])
    assert whole.keys() == {"loss", "log_rmse"}
    assert halves["log_rmse"] == pytest.approx(whole["log_rmse"], rel=1e-6)
    assert halves["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    expected = torch.sqrt(((torch.log(y_hat.clamp(min=1)) - torch.log(y)) ** 2).mean())
    assert whole["log_rmse"] == pytest.approx(expected.item(), rel=1e-5)
    assert whole["loss"] == pytest.approx(((y_hat - y) ** 2).mean().item(), rel=1e-5)
    squared = batch_metrics(RegressionTask(loss="squared"), [(y_hat, y)])
    assert squared == {"loss": pytest.approx(whole["loss"] / 2, rel=1e-6)}
    loss, _, _ = RegressionTask(loss="squared").training_step(nn.Identity(), (y_hat, y))
    assert loss.item() == pytest.approx(whole["loss"] / 2, rel=1e-5)
    with pytest.raises(DlrunError, match="task.loss='l1'"):
        RegressionTask(loss="l1")


def test_scratch_and_torch_linear_regression_agree():
    torch.manual_seed(0)
    scratch = LinearRegression(5, impl="scratch")
    concise = LinearRegression(5, impl="torch")
    assert scratch.weight.shape == concise.weight.shape == (1, 5)
    assert torch.equal(scratch.bias, torch.zeros(1)) and torch.equal(concise.bias, torch.zeros(1))
    assert 0.001 < scratch.weight.std().item() < 0.05
    with torch.no_grad():
        concise.linear.weight.copy_(torch.randn(1, 5))
        concise.linear.bias.fill_(0.7)
        scratch.w.copy_(concise.weight.T)
        scratch.b.copy_(concise.bias)
    x = torch.randn(8, 5)
    assert torch.allclose(scratch(x), concise(x), atol=1e-6)
    assert torch.equal(scratch.weight, concise.weight)
    no_bias = LinearRegression(3, impl="scratch", bias=False)
    assert no_bias.bias is None and len(list(no_bias.parameters())) == 1
    assert LinearRegression(3, bias=False).bias is None
    with pytest.raises(DlrunError, match="model.impl='numpy'"):
        LinearRegression(3, impl="numpy")


class RecordingLogger:
    def __init__(self):
        self.texts, self.metrics = [], []

    def log_text(self, tag, text, step):
        self.texts.append((tag, text))

    def log_metrics(self, metrics, step):
        self.metrics.append(metrics)


def test_fit_end_reports_parameters_and_weight_norm(caplog):
    data = SyntheticLinearData(num_train=10, num_val=10)
    model = LinearRegression(2, impl="scratch")
    with torch.no_grad():
        model.w.copy_(torch.tensor([[2.5], [-3.4]]))
        model.b.fill_(4.0)
    task = RegressionTask(report_weight_norm=True)
    logger = RecordingLogger()
    ctx = FitContext(Path("."), logger, data, epoch=1)
    task.on_fit_start(model, ctx)
    with caplog.at_level(logging.INFO, logger="dlrun"):
        task.on_epoch_end(model, ctx)
        task.on_fit_end(model, ctx)
    text = caplog.text
    assert "error in estimating w: [-0.5, 0]" in text and "error in estimating b: [0.2" in text
    assert f"L2 norm of w: {math.hypot(2.5, 3.4):.6g}" in text
    assert logger.texts and logger.texts[0][0] == "parameters"
    assert logger.metrics[0]["weight_norm"] == pytest.approx(math.hypot(2.5, 3.4), rel=1e-6)


# ------------------------------------------------------------------ runs
def test_book_settings(compose_cfg):
    book = {  # experiment: (lr, batch, epochs)
        "linear_regression": (0.03, 10, 3),
        "polynomial": (0.01, 10, 400),
        "polynomial_underfit": (0.01, 10, 400),
        "polynomial_overfit": (0.01, 10, 1500),
        "weight_decay": (0.003, 5, 100),
        "kaggle_house": (5.0, 64, 100),
    }
    for name, (lr, batch, epochs) in book.items():
        cfg = compose_cfg([f"experiment=d2l/{name}"])
        assert (cfg.optim.lr, cfg.data.batch_size, cfg.trainer.max_epochs) == (lr, batch, epochs), name
        assert cfg.task._target_.endswith("RegressionTask") and cfg.name == f"d2l_{name}"
    variants = ("polynomial", "polynomial_underfit", "polynomial_overfit")
    assert [compose_cfg([f"experiment=d2l/{v}"]).data.num_features for v in variants] == [4, 2, 20]
    cfg = compose_cfg(["experiment=d2l/kaggle_house"])
    assert cfg.optim._target_ == "torch.optim.Adam" and cfg.optim.weight_decay == 0
    assert cfg.task.monitor == "val/log_rmse" and cfg.trainer.monitor == "val/log_rmse" and cfg.task.log_rmse
    cfg = compose_cfg(["experiment=d2l/weight_decay", "optim.weight_decay=3"])
    assert cfg.task.report_weight_norm and cfg.model.init_std == 1.0 and cfg.optim.weight_decay == 3


QUIET = ["logger=none", "trainer.progress_bar=false", "trainer.device=cpu"]


def test_linear_regression_run_recovers_w_and_b(compose_cfg, caplog):
    cfg = compose_cfg(["experiment=d2l/linear_regression", *QUIET])
    with caplog.at_level(logging.INFO, logger="dlrun"):
        run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 3
    assert metrics["final"]["val/loss"] < 1e-3  # the noise alone gives 0.5 * 0.01^2 = 5e-5
    state = checkpoint.load(run_dir / "last.ckpt")["model"]
    w, b = state["w"].reshape(-1), state["b"]
    assert torch.allclose(w, torch.tensor([2.0, -3.4]), atol=1e-2), w
    assert torch.allclose(b, torch.tensor([4.2]), atol=1e-2), b
    assert "error in estimating w" in caplog.text and "error in estimating b" in caplog.text


def test_csv_run_and_predict_write_a_submission(compose_cfg, tmp_path):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(60, 2, generator=generator) * 100
    price = 1000 + 30 * x[:, 0] + 5 * x[:, 1]
    rows = [["Id", "a", "b", "kind", "Price"]]
    rows += [[i, f"{x[i, 0]:.3f}", f"{x[i, 1]:.3f}", "uv"[i % 2], f"{price[i]:.3f}"] for i in range(60)]
    train = write_csv(tmp_path / "train.csv", rows)
    test = write_csv(tmp_path / "test.csv", [["Id", "a", "b", "kind"], [100, 1, 2, "u"], [101, 50, 50, "w"]])
    data = [
        "data=csv",
        f"data.path={train}",
        "data.target=Price",
        f"data.test_path={test}",
        "data.id_column=Id",
        "data.batch_size=8",
    ]
    common = ["model=linear_regression", "task=regression", "task.log_rmse=true", "optim=adam", *QUIET]
    cfg = compose_cfg([*data, *common, "optim.lr=5", "trainer.max_epochs=20"])
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert {"train/loss", "train/log_rmse", "val/loss", "val/log_rmse"} <= final.keys()
    run(compose_cfg([*data, *common, "mode=predict", f"ckpt_path={run_dir}"]))
    with (run_dir / "submission.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Id", "Price"] and [r[0] for r in rows[1:]] == ["100", "101"]
    assert all(math.isfinite(float(r[1])) for r in rows[1:])
