import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import dlrun.resolvers  # noqa: F401  (${coalesce:}, ${minus:}, ${run_id:})

# dlrun.signature_cache: tests and the dl-run processes they start use their own cache, not ~/.cache.
if "DLRUN_CACHE_DIR" not in os.environ:
    os.environ["DLRUN_CACHE_DIR"] = tempfile.mkdtemp(prefix="dlrun-cache-")
    atexit.register(shutil.rmtree, os.environ["DLRUN_CACHE_DIR"], ignore_errors=True)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# The real data sets beside the checkout (CI has them; a user's clone may not).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _quiet_threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture
def compose_cfg(tmp_path):
    """compose(overrides, output_dir=None) -> the config dl-run would build, Hydra's runtime keys set
    (output dir: `output_dir`, else <tmp>/run)."""

    def _compose(overrides=(), output_dir=None):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir or tmp_path / "run")
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def fit_run():
    """fit_run(run_dir, **options) -> (summary, trainer): train with the engine directly (no Hydra).

    By default a small dropout MLP on fake 8x8 images with SGD lr 0.5; `model` and `data` (instances, or
    factories called after seeding), `task`, `optimizer`, `scheduler`, `interval`, `seed` replace them; the
    MLP takes `dropout`, the fake images `num_train` and `batch_size`; every other option goes to the
    Trainer."""
    from functools import partial

    from dlrun.data.fake import FakeImageData
    from dlrun.engine.seed import seed_everything
    from dlrun.engine.trainer import Trainer
    from dlrun.models.mlp import MLP
    from dlrun.tasks.classification import ClassificationTask

    def fit(
        run_dir,
        *,
        model=None,
        data=None,
        task=None,
        dropout=(0.2, 0.5),
        optimizer=None,
        scheduler=None,
        interval="epoch",
        num_train=256,
        batch_size=32,
        config_yaml=None,
        seed=0,
        **trainer_kwargs,
    ):
        seed_everything(0)
        data = data() if callable(data) else data
        data = data or FakeImageData(batch_size=batch_size, num_train=num_train, num_val=64, size=8)
        model = model() if callable(model) and not isinstance(model, torch.nn.Module) else model
        model = model or MLP(image_size=8, hidden_sizes=[32, 32], dropout=list(dropout), init="xavier")
        options = dict(device="cpu", progress_bar=False, monitor="val/acc", monitor_mode="max")
        trainer = Trainer(**(options | trainer_kwargs))
        summary = trainer.fit(
            model,
            task or ClassificationTask(),
            data,
            optimizer or partial(torch.optim.SGD, lr=0.5),
            scheduler,
            interval,
            run_dir=run_dir,
            seed=seed,
            config_yaml=config_yaml,
        )
        return summary, trainer

    return fit


def run_cli(args, cwd, env=None, timeout=300, check=True):
    """Run `python -m dlrun ARGS` in a subprocess, as a user would type dl-run."""
    full_env = os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "dlrun", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"dl-run {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def write_idx(root: Path, folder: str, split: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Write MNIST-format idx files (what torchvision's MNIST/FashionMNIST read) under root/folder/raw."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    header = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + h.to_bytes(4, "big") + w.to_bytes(4, "big")
    (raw / f"{split}-images-idx3-ubyte").write_bytes(header + images.to(torch.uint8).numpy().tobytes())
    header = (2049).to_bytes(4, "big") + n.to_bytes(4, "big")
    (raw / f"{split}-labels-idx1-ubyte").write_bytes(header + labels.to(torch.uint8).numpy().tobytes())
