"""data=airfoil (book 11.5) and the airfoil experiments, on a small table the tests write themselves."""

import json

import pytest
import torch
from conftest import run_cli

from dlrun.data import airfoil
from dlrun.data.airfoil import AirfoilData
from dlrun.errors import DlrunError

EXPERIMENTS = {  # name -> (optim, lr, batch size, epochs): the book's settings
    "airfoil_gd": ("d2l_sgd", 1.0, 1500, 10),
    "airfoil_sgd": ("d2l_sgd", 0.005, 1, 2),
    "airfoil_minibatch_sgd": ("d2l_sgd", 0.05, 10, 2),
    "airfoil_momentum": ("d2l_momentum", 0.02, 10, 2),
    "airfoil_adagrad": ("d2l_adagrad", 0.1, 10, 2),
    "airfoil_rmsprop": ("d2l_rmsprop", 0.01, 10, 2),
    "airfoil_adadelta": ("d2l_adadelta", 1.0, 10, 2),
    "airfoil_adam": ("d2l_adam", 0.01, 10, 2),
    "airfoil_yogi": ("yogi", 0.01, 10, 2),
}


def write_table(folder, rows=40, seed=0):
    """rows x 6 tab-separated numbers (CRLF, as the book's file), target = a linear function + noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, 5, generator=g, dtype=torch.float64) * torch.tensor([5000, 20, 0.3, 70, 0.05])
    y = x @ torch.tensor([[-1e-3], [-0.2], [-10.0], [0.05], [-50.0]], dtype=torch.float64) + 130
    table = torch.cat([x, y + torch.randn(rows, 1, generator=g, dtype=torch.float64)], dim=1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "airfoil_self_noise.dat").write_bytes(
        "".join("\t".join(f"{v:.6g}" for v in row) + "\r\n" for row in table.tolist()).encode()
    )
    return table


def test_standardised_first_rows_target_last(tmp_path):
    table = write_table(tmp_path)
    data = AirfoilData(tmp_path, download=False, batch_size=4, num_examples=30)
    assert data.x_train.shape == (30, 5) and data.y_train.shape == (30, 1)
    assert data.x_train.dtype == data.y_train.dtype == torch.float32
    # Standardised over every row of the file (population std, numpy's), then the first 30 kept.
    parsed = torch.tensor([[float(f"{v:.6g}") for v in row] for row in table.tolist()], dtype=torch.float64)
    expected = (parsed - parsed.mean(0)) / parsed.std(0, correction=0)
    torch.testing.assert_close(data.x_train, expected[:30, :5].float())
    torch.testing.assert_close(data.y_train, expected[:30, 5:].float())
    # The book's train_ch11 reports the loss on the whole training set: validation is the training set.
    assert data.x_val is data.x_train and data.y_val is data.y_train
    assert data.model_kwargs == {"in_features": 5}


def test_missing_file_says_where_and_how(tmp_path):
    with pytest.raises(DlrunError) as err:
        AirfoilData(tmp_path / "empty", download=False)
    message = str(err.value)
    assert "\n" not in message and str((tmp_path / "empty").resolve()) in message
    assert airfoil.AIRFOIL_URL in message and "DLRUN_DATA_DIR" in message


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    def refuse(url, path, sha1):
        raise OSError("network unreachable")

    monkeypatch.setattr(airfoil, "download", refuse)
    with pytest.raises(DlrunError, match="downloading failed \\(network unreachable\\)"):
        AirfoilData(tmp_path, download=True)


def test_bad_rows_and_sizes(tmp_path):
    write_table(tmp_path, rows=10)
    with pytest.raises(DlrunError, match=r"data.num_examples=11 must lie in \[1, 10\]"):
        AirfoilData(tmp_path, download=False, num_examples=11)
    (tmp_path / "airfoil_self_noise.dat").write_text("1\t2\t3\n4\tx\t6\n")
    with pytest.raises(DlrunError, match="line 2 is not tab-separated numbers"):
        AirfoilData(tmp_path, download=False)


def test_experiments_hold_the_books_settings(compose_cfg):
    for name, (optim, lr, batch, epochs) in EXPERIMENTS.items():
        cfg = compose_cfg([f"experiment=d2l/{name}"])
        assert cfg.optim._target_ == compose_cfg([f"optim={optim}"]).optim._target_, name
        assert (cfg.optim.lr, cfg.data.batch_size, cfg.trainer.max_epochs) == (lr, batch, epochs), name
        assert cfg.data._target_ == "dlrun.data.airfoil.AirfoilData" and cfg.data.num_examples == 1500
        assert cfg.task.loss == "squared" and cfg.model.impl == "scratch" and cfg.model.init_std == 0.01
        assert cfg.book.edition == "v2" and set(cfg.book.metrics) == {"val/loss"}, name
        assert 0.2 < cfg.book.metrics["val/loss"] < 0.3 and 0.2 < cfg.book.metrics_en["val/loss"] < 0.3


def test_airfoil_run_lowers_the_loss(tmp_path):
    write_table(tmp_path / "data", rows=60)
    args = ["experiment=d2l/airfoil_adam", "data.num_examples=50", "logger=none", "trainer.device=cpu"]
    run_cli([*args, "trainer.max_epochs=3"], tmp_path, env={"DLRUN_DATA_DIR": str(tmp_path / "data")})
    metrics = json.loads(next((tmp_path / "outputs").rglob("metrics.json")).read_text())
    losses = [epoch["val/loss"] for epoch in metrics["history"]]
    # Standardised targets: the untrained model's loss is about 1/2; Adam at lr 0.01 brings it down.
    assert len(losses) == 3 and losses[-1] < losses[0] < 0.6
