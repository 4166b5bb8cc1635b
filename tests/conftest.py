import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import dlrun.resolvers  # noqa: F401  (${coalesce:}, ${minus:}, ${run_id:})

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(autouse=True)
def _quiet_threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture
def compose_cfg(tmp_path):
    """compose(overrides) -> the config dl-run would build, Hydra's runtime keys set (output dir = tmp)."""

    def _compose(overrides=()):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


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
