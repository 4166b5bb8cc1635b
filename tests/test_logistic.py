"""Logistic regression on a CSV class column: class encoding, L2 through optim.weight_decay, accuracy, and
the confusion matrix every classification run writes."""

import csv
import json
from pathlib import Path

import pytest
import torch

from dlrun.data.tabular import CsvData
from dlrun.engine import checkpoint
from dlrun.errors import DlrunError
from dlrun.run import run

QUIET = ["logger=none", "trainer.progress_bar=false", "trainer.device=cpu", "print_config=false"]


def write_csv(path: Path, rows) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def three_blobs(path: Path, n: int = 90) -> Path:
    """Three classes around (0, 4), (4, 0) and (-4, -4); a categorical column that carries nothing."""
    g = torch.Generator().manual_seed(0)
    centres = {"setosa": (0.0, 4.0), "versicolor": (4.0, 0.0), "virginica": (-4.0, -4.0)}
    rows = [["a", "b", "colour", "species"]]
    for i in range(n):
        name = list(centres)[i % 3]
        a, b = (torch.tensor(centres[name]) + torch.randn(2, generator=g)).tolist()
        rows.append([f"{a:.4f}", f"{b:.4f}", "rg"[i % 2], name])
    return write_csv(path, rows)


def fit(compose_cfg, path: Path, *extra: str) -> tuple[Path, dict]:
    cfg = compose_cfg(
        [
            "data=csv",
            f"data.path={path}",
            "data.target=species",
            "data.task=classification",
            "data.batch_size=10",
            "task=classification",
            "model=logistic_regression",
            "optim=sgd",
            "optim.lr=0.1",
            "trainer.max_epochs=5",
            *QUIET,
            *extra,
        ]
    )
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_class_column_is_encoded(tmp_path):
    rows = [["x", "label"], *[[i, lab] for i, lab in enumerate(["10", "9", "2", "9", "10", "2"])]]
    data = CsvData(write_csv(tmp_path / "t.csv", rows), target="label", task="classification", val_fraction=0)
    assert data.class_names == ["2", "9", "10"]  # numbers sort as numbers
    assert data.y_all.tolist() == [2, 1, 0, 1, 2, 0] and data.y_all.dtype == torch.long
    assert data.model_kwargs == {"in_features": 1, "out_features": 3}


def test_bad_class_columns_say_what_to_do(tmp_path):
    one = write_csv(tmp_path / "one.csv", [["x", "label"], [1, "a"], [2, "a"]])
    with pytest.raises(DlrunError, match="one class"):
        CsvData(one, target="label", task="classification", val_fraction=0)
    with pytest.raises(DlrunError, match="data.task=classification"):
        CsvData(one, target="label", val_fraction=0)
    gap = write_csv(tmp_path / "gap.csv", [["x", "label"], [1, "a"], [2, ""], [3, "b"]])
    with pytest.raises(DlrunError, match="line 3"):
        CsvData(gap, target="label", task="classification", val_fraction=0)


def test_logistic_regression_learns_and_writes_its_confusion_matrix(compose_cfg, tmp_path):
    run_dir, metrics = fit(compose_cfg, three_blobs(tmp_path / "blobs.csv"))
    acc = metrics["final"]["val/acc"]
    assert acc >= 0.9, metrics["final"]
    with (run_dir / "confusion_matrix.csv").open() as f:
        header, *rows = list(csv.reader(f))
    assert header[1:] == ["setosa", "versicolor", "virginica"]
    counts = torch.tensor([[int(v) for v in row[1:]] for row in rows])
    assert int(counts.sum()) == 18  # the 20% hold-out of 90 rows
    assert int(counts.trace()) / 18 == pytest.approx(acc)
    assert (run_dir / "confusion_matrix.png").stat().st_size > 5000


def test_weight_decay_shrinks_the_weights(compose_cfg, tmp_path):
    path = three_blobs(tmp_path / "blobs.csv")
    norms = []
    for wd in (0.0, 0.5):
        run_dir, _ = fit(compose_cfg, path, f"optim.weight_decay={wd}")
        weight = checkpoint.load(run_dir / "last.ckpt")["model"]["linear.weight"]
        norms.append(float(weight.norm()))
    assert norms[1] < 0.7 * norms[0], norms
