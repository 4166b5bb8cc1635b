"""NASA's airfoil self-noise table, the book's optimization-chapter regression set (11.5, `get_data_ch11`).

`airfoil_self_noise.dat`: 1503 rows of 5 features and a target (scaled sound pressure, dB), tab-separated.
As in the book, every column is standardised with the mean and population standard deviation (numpy's `std`,
ddof=0) of all 1503 rows, then the first `num_examples` (1500) rows are kept, the last column the target.
The book's `train_ch11` reports the loss over the whole training set, so validation is the training set.
"""

import logging
import math
from pathlib import Path

import torch

from dlrun.data.download import download, sha1
from dlrun.data.in_memory import InMemoryData
from dlrun.errors import DlrunError, first_line

log = logging.getLogger("dlrun")

# d2l.DATA_HUB['airfoil']
AIRFOIL_FILE = "airfoil_self_noise.dat"
AIRFOIL_URL = "http://d2l-data.s3-accelerate.amazonaws.com/" + AIRFOIL_FILE
AIRFOIL_SHA1 = "76e5be1548fd8222e5074cf0faae75edff8cf93f"


def read_table(path: Path) -> torch.Tensor:
    """The tab-separated numbers of path as a (rows, columns) float64 tensor (one clear error otherwise)."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append([float(v) for v in line.strip().split("\t")])
            except ValueError:
                raise DlrunError(
                    f"{path} line {number} is not tab-separated numbers: {line.strip()!r}"
                ) from None
            if len(rows[-1]) != len(rows[0]):
                raise DlrunError(
                    f"{path} line {number} has {len(rows[-1])} fields, line 1 has {len(rows[0])}"
                )
    if not rows:
        raise DlrunError(f"{path} is empty")
    return torch.tensor(rows, dtype=torch.float64)


def standardise(table: torch.Tensor) -> torch.Tensor:
    """(table - mean) / std per column, the population std (ddof=0) as numpy's; constant columns stay 0."""
    std = table.std(dim=0, correction=0)
    return (table - table.mean(dim=0)) / torch.where(std > 0, std, torch.ones_like(std))


def airfoil_file(root: str | Path, download_missing: bool) -> Path:
    path = Path(root) / AIRFOIL_FILE
    if path.is_file():
        if sha1(path) != AIRFOIL_SHA1:
            log.warning("%s is not the book's copy (sha1 differs); its figures may differ", path)
        return path
    where = f"{AIRFOIL_FILE} not found at {path.resolve()}"
    how = (
        f"download {AIRFOIL_URL} (sha1 {AIRFOIL_SHA1}) there, or point DLRUN_DATA_DIR (paths.data_dir) "
        f"at a folder that holds {AIRFOIL_FILE}"
    )
    if not download_missing:
        raise DlrunError(f"{where}; {how}")
    log.info("%s: downloading %s", where, AIRFOIL_URL)
    try:
        return download(AIRFOIL_URL, path, AIRFOIL_SHA1)
    except (OSError, ValueError) as err:
        raise DlrunError(f"{where}, and downloading failed ({first_line(err)}); {how}") from None


class AirfoilData(InMemoryData):
    """The book's airfoil data: 5 standardised features, the standardised noise level as target (n, 1)."""

    def __init__(
        self,
        root: str | Path = "data",
        download: bool = True,
        batch_size: int = 10,
        num_examples: int = 1500,
        val_batch_size: int | None = None,
        on_device: bool = False,
    ):
        super().__init__(batch_size, val_batch_size, on_device)
        table = read_table(airfoil_file(root, download))
        if table.shape[1] < 2:
            raise DlrunError(
                f"{Path(root) / AIRFOIL_FILE} has {table.shape[1]} column; expected features and a target"
            )
        if not 1 <= num_examples <= len(table):
            raise DlrunError(
                f"data.num_examples={num_examples} must lie in [1, {len(table)}] (the rows of the file)"
            )
        data = standardise(table)[:num_examples].float()
        if not math.isfinite(float(data.abs().sum())):
            raise DlrunError(f"{Path(root) / AIRFOIL_FILE} holds values that are not finite numbers")
        self.x_train, self.y_train = data[:, :-1], data[:, -1:]
        self.x_val, self.y_val = self.x_train, self.y_train
        self.model_kwargs = {"in_features": self.x_train.shape[1]}
