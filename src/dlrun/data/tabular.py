"""Tables from CSV files, preprocessed as the book's Kaggle House chapter (4.10) does, without pandas.

Preprocessing (fitted on the labelled training file only, then applied unchanged to the test file):
numeric columns are standardised with the training rows' mean and sample standard deviation (pandas'
`std`, ddof=1), missing numeric values become 0 (the mean) after standardising; every other column is
one-hot encoded with one column per category seen in the training rows plus a missing-value indicator
(pandas' `get_dummies(dummy_na=True)`). The book standardises train and test together; here the test file
contributes nothing, and a test category never seen in training gets all zeros in that column's group.

A column is numeric when every non-missing training value parses as a number. Missing means an empty cell
or one of pandas' default NA strings ("NA", "NaN", "null", ...), as in the book's `pd.read_csv`.
"""

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from dlrun.data.download import download
from dlrun.data.in_memory import InMemoryData
from dlrun.errors import DlrunError, first_line
from dlrun.ranges import BatchSize, OptionalBatchSize

log = logging.getLogger("dlrun")

# pandas.read_csv's default na_values.
NA_VALUES = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>"]
    + ["N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)

# The book's copies (d2l.DATA_HUB['kaggle_house_train'] / ['kaggle_house_test']): url, sha1.
DATA_URL = "http://d2l-data.s3-accelerate.amazonaws.com/"
KAGGLE_HOUSE_FILES = {
    "kaggle_house_pred_train.csv": (
        DATA_URL + "kaggle_house_pred_train.csv",
        "585e9cc93e70b39160e7921475f9bcd7d31219ce",
    ),
    "kaggle_house_pred_test.csv": (
        DATA_URL + "kaggle_house_pred_test.csv",
        "fa19780a7b011d9b009e8bff8e99922a8ee2eb90",
    ),
}


def _is_missing(value: str) -> bool:
    return value.strip() in NA_VALUES


def _to_float(value: str) -> float | None:
    """The number in a cell, None when it is missing or not a number."""
    if _is_missing(value):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def read_csv(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file, every row as long as the header (else one clear error)."""
    path = Path(path)
    if not path.is_file():
        raise DlrunError(f"CSV file {path} not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if row]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DlrunError(
            f"{path} is not a UTF-8 text CSV ({type(err).__name__}); give a comma-separated text file"
        ) from None
    if not rows:
        raise DlrunError(f"{path} is empty (expected a header line and rows)")
    header, body = [name.strip() for name in rows[0]], rows[1:]
    if not body:
        raise DlrunError(f"{path} has a header but no rows")
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DlrunError(f"{path} line {number} has {len(row)} fields, the header has {len(header)}")
    return header, body


class TableEncoder:
    """The book's preprocessing as a fit/transform pair: standardise numbers, one-hot everything else."""

    def fit(self, columns: dict[str, list[str]]) -> "TableEncoder":
        self.numeric: dict[str, tuple[float, float]] = {}  # name -> (mean, std)
        self.categories: dict[str, list[str]] = {}  # name -> categories (sorted)
        for name, values in columns.items():
            present = [v for v in values if not _is_missing(v)]
            numbers = [_to_float(v) for v in present]
            if all(n is not None for n in numbers):
                self.numeric[name] = self._stats([n for n in numbers if n is not None])
            else:
                self.categories[name] = sorted({v.strip() for v in present})
        self.names = list(self.numeric) + [
            f"{name}_{category}" for name, cats in self.categories.items() for category in [*cats, "nan"]
        ]
        return self

    @staticmethod
    def _stats(numbers: list[float]) -> tuple[float, float]:
        if not numbers:
            return 0.0, 1.0
        mean = math.fsum(numbers) / len(numbers)
        if len(numbers) < 2:
            return mean, 1.0
        std = math.sqrt(math.fsum((n - mean) ** 2 for n in numbers) / (len(numbers) - 1))
        # A constant column would divide by zero: keep it centred (all zeros) instead.
        return mean, std if std > 0 and math.isfinite(std) else 1.0

    def transform(self, columns: dict[str, list[str]]) -> Tensor:
        """(rows, features) float32; the columns must include every column seen by fit."""
        n = len(next(iter(columns.values()))) if columns else 0
        parts = []
        for name, (mean, std) in self.numeric.items():
            values = [_to_float(v) for v in columns[name]]
            parts.append(
                torch.tensor([0.0 if v is None else (v - mean) / std for v in values], dtype=torch.float64)
            )
        blocks = [torch.stack(parts, dim=1)] if parts else []
        for name, cats in self.categories.items():
            index = {c: i for i, c in enumerate(cats)}
            missing = len(cats)
            onehot = torch.zeros(n, len(cats) + 1, dtype=torch.float64)
            for row, value in enumerate(columns[name]):
                j = missing if _is_missing(value) else index.get(value.strip())
                if j is not None:  # an unseen category: all zeros
                    onehot[row, j] = 1.0
            blocks.append(onehot)
        if not blocks:
            return torch.zeros(n, 0)
        return torch.cat(blocks, dim=1).float()


class CsvData(InMemoryData):
    """Any CSV table with a numeric target column, preprocessed as the book's Kaggle House data.
    `task="classification"`: the target column holds classes (any values; sorted, numerically when they are
    all numbers, as `class_names`); y is their index and the model gets `out_features` = the class count.

    Validation: a seeded hold-out of `val_fraction` of the labelled rows (`seed`, independent of the run's
    seed); `val_fraction=0` trains on every row and validates on the same rows (the book's final
    `train_and_pred`). The whole preprocessed labelled set stays available as `x_all`, `y_all` (for
    k-fold), the preprocessed test file as `x_test` with `test_ids`. The encoding is fitted on all labelled
    rows, so hold-out and k-fold folds share it (validation rows take part in the feature statistics,
    never their targets).
    """

    def __init__(
        self,
        path: str | Path,
        target: str,
        batch_size: BatchSize = 64,
        test_path: str | Path | None = None,
        id_column: str | None = None,
        drop_columns: Sequence[str] = (),
        val_fraction: float = 0.2,
        seed: int = 0,
        val_batch_size: OptionalBatchSize = None,
        on_device: bool = False,
        task: Literal["regression", "classification"] = "regression",
    ):
        super().__init__(batch_size, val_batch_size, on_device)
        if task not in ("regression", "classification"):
            raise DlrunError(f"data.task={task!r}; use regression or classification")
        if not 0.0 <= val_fraction < 1.0:
            raise DlrunError(f"data.val_fraction={val_fraction} must lie in [0, 1)")
        self.path, self.target, self.id_column = Path(path), target, id_column
        header, rows = read_csv(self.path)
        if target not in header:
            raise DlrunError(f"target column {target!r} not in {self.path} (columns: {self._names(header)})")
        for name in [id_column, *drop_columns]:
            if name is not None and name not in header:
                raise DlrunError(f"column {name!r} not in {self.path} (columns: {self._names(header)})")
        t = header.index(target)
        self.class_names: list[str] | None = None
        if task == "classification":
            self.y_all = self._classes(rows, t)
        else:
            self.y_all = self._numbers(rows, t)
        skip = {target, *drop_columns} | ({id_column} if id_column else set())
        features = [name for name in header if name not in skip]
        columns = {name: [row[header.index(name)] for row in rows] for name in features}
        self.encoder = TableEncoder().fit(columns)
        self.feature_names = self.encoder.names
        self.x_all = self.encoder.transform(columns)
        if self.x_all.shape[1] == 0:
            raise DlrunError(f"{self.path} has no feature columns besides {target!r}")

        self.x_test, self.test_ids = None, None
        if test_path is not None:
            self.test_path = Path(test_path)
            test_header, test_rows = read_csv(self.test_path)
            absent = [name for name in features if name not in test_header]
            if absent:
                raise DlrunError(f"{self.test_path} lacks the training columns {self._names(absent)}")
            if id_column is not None and id_column not in test_header:
                raise DlrunError(f"id column {id_column!r} not in {self.test_path}")
            test_columns = {name: [row[test_header.index(name)] for row in test_rows] for name in features}
            self.x_test = self.encoder.transform(test_columns)
            if id_column is not None:
                self.test_ids = [row[test_header.index(id_column)] for row in test_rows]

        n = len(self.y_all)
        num_val = round(n * val_fraction)
        if val_fraction > 0 and not 1 <= num_val < n:
            raise DlrunError(
                f"data.val_fraction={val_fraction} of {n} rows leaves no training or no validation row"
            )
        if num_val == 0:
            self.x_train, self.y_train = self.x_all, self.y_all
            self.x_val, self.y_val = self.x_all, self.y_all
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            val, train = order[:num_val], order[num_val:]
            self.x_train, self.y_train = self.x_all[train], self.y_all[train]
            self.x_val, self.y_val = self.x_all[val], self.y_all[val]
        self.model_kwargs = {"in_features": self.x_all.shape[1]}
        if self.class_names is not None:
            self.model_kwargs["out_features"] = self.num_classes = len(self.class_names)

    def _numbers(self, rows: list[list[str]], t: int) -> Tensor:
        y = []
        for number, row in enumerate(rows, start=2):
            value = _to_float(row[t])
            if value is None or not math.isfinite(value):
                raise DlrunError(
                    f"target column {self.target!r} in {self.path} must be numeric and present "
                    "(data.task=classification for a class column); "
                    f"line {number} has {row[t]!r}"
                )
            y.append(value)
        return torch.tensor(y, dtype=torch.float32).reshape(-1, 1)

    def _classes(self, rows: list[list[str]], t: int) -> Tensor:
        labels = [row[t].strip() for row in rows]
        for number, label in enumerate(labels, start=2):
            if _is_missing(label):
                raise DlrunError(f"class column {self.target!r} in {self.path} has no value on line {number}")
        names = sorted(set(labels))
        numbers = [_to_float(name) for name in names]
        if all(n is not None for n in numbers):
            names = [name for _, name in sorted(zip(numbers, names, strict=True))]
        if len(names) < 2:
            raise DlrunError(
                f"class column {self.target!r} in {self.path} has one class ({names[0]!r}); need two"
            )
        self.class_names = names
        index = {name: i for i, name in enumerate(names)}
        return torch.tensor([index[label] for label in labels], dtype=torch.long)

    @staticmethod
    def _names(names: Sequence[str], limit: int = 12) -> str:
        shown = ", ".join(names[:limit])
        return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def kaggle_house_files(root: str | Path, download_missing: bool) -> tuple[Path, Path]:
    """The book's Kaggle House train and test CSVs under root, downloaded when missing and allowed."""
    root = Path(root)
    paths = {name: root / name for name in KAGGLE_HOUSE_FILES}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        where = f"{', '.join(missing)} not found in {root.resolve()}"
        if not download_missing:
            raise DlrunError(f"{where}; set data.download=true or put the files there")
        log.info("%s: downloading the book's copies", where)
        for name in missing:
            url, sha1 = KAGGLE_HOUSE_FILES[name]
            try:
                download(url, paths[name], sha1)
            except (OSError, ValueError) as err:
                reason = first_line(err)
                raise DlrunError(
                    f"{where}, and downloading failed ({reason}); copy the files there, or point "
                    f"DLRUN_DATA_DIR (paths.data_dir) at a folder that holds them"
                ) from None
    return paths["kaggle_house_pred_train.csv"], paths["kaggle_house_pred_test.csv"]


class KaggleHouseData(CsvData):
    """Kaggle House Prices (book 4.10): 1460 labelled rows, 1459 test rows; target SalePrice, id Id.

    The book's preprocessing (see the module docstring) gives 330 feature columns here (the book's 331
    counts the test file's categories too). Hold-out validation of `val_fraction` of the labelled rows by
    default; k-fold is the runner's job (it uses `x_all`, `y_all`).
    """

    def __init__(
        self,
        root: str | Path,
        download: bool = True,
        batch_size: BatchSize = 64,
        val_fraction: float = 0.2,
        seed: int = 0,
        val_batch_size: OptionalBatchSize = None,
        on_device: bool = False,
    ):
        train_path, test_path = kaggle_house_files(root, download)
        super().__init__(
            train_path,
            target="SalePrice",
            batch_size=batch_size,
            test_path=test_path,
            id_column="Id",
            val_fraction=val_fraction,
            seed=seed,
            val_batch_size=val_batch_size,
            on_device=on_device,
        )
