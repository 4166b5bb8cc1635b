"""Checkpoint files: written atomically (temp file, fsync, rename), loaded without unpickling code."""

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from dlrun.atomic import replacing
from dlrun.errors import DlrunError, first_line


def save_atomic(obj: dict, path: Path) -> None:
    """A crash mid-write leaves the previous file intact: readers only ever see a complete checkpoint."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def cpu_copy(obj):
    """A copy of a checkpoint dict whose tensors no longer change with training (cloned to the CPU)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


def load(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DlrunError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and why, in one line
        raise DlrunError(f"checkpoint {path} could not be read ({first_line(err)})") from None


def load_model_weights(model, state_dict: dict, path: Path, hint: str) -> None:
    """load_state_dict, with a mismatch reported as one line naming the file and what to do (`hint`)."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise DlrunError(f"{path} does not fit this model ({first_line(err)}); {hint}") from None


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, key, *rest = state["numpy"]
    np.random.set_state((kind, key.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_resumable(run_dir: Path, runs_root: Path) -> Path | None:
    """For trainer.resume=auto: this run dir's last.ckpt, else the newest last.ckpt under runs_root whose run
    neither completed nor was continued by a later run."""
    own = Path(run_dir) / "last.ckpt"
    if own.is_file():
        return own
    candidates, continued = [], set()
    for ckpt in Path(runs_root).glob("*/last.ckpt"):
        metrics_file = ckpt.parent / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        if metrics.get("resumed_from"):
            continued.add(Path(metrics["resumed_from"]).resolve())
        if metrics.get("status") != "completed":
            candidates.append(ckpt)
    candidates = [c for c in candidates if c.resolve() not in continued]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)
