"""Checkpoint files, in one place: their names, the atomic write, the load that unpickles no code, which
checkpoints are written when (CheckpointSaver), which one a resume continues, and the lock on a run dir.

    last.ckpt    every checkpoint_every_n_epochs, at the end, and on Ctrl-C / SIGTERM (mid-epoch included)
    best.ckpt    the epoch with the best monitored metric
    metrics.json the run's summary (dlrun.engine.summary), from its first moment on
"""

import fcntl
import logging
import os
import random
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dlrun.atomic import replacing
from dlrun.engine.summary import METRICS_FILE, read_summary, write_json
from dlrun.errors import DlrunError, first_line

log = logging.getLogger("dlrun")

LAST = "last.ckpt"
BEST = "best.ckpt"
LOCK_FILE = ".lock"
# Statuses a later resume=auto may continue (no metrics.json: a run of an older dlrun, or killed at once).
UNFINISHED = ("running", "killed", "interrupted", None)


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
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and why, in one line
        reason = first_line(err)
        if "weights_only" in str(err) or "Weights only" in reason:
            # torch's advice (weights_only=False) would run whatever code the file holds: never give it.
            reason = "not a checkpoint, or one holding objects other than tensors and plain data"
        raise DlrunError(f"checkpoint {path} could not be read ({reason})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise DlrunError(f"{path} is not a dlrun checkpoint (no model weights in it)")
    return ckpt


def load_model_weights(model, state_dict: dict, path: Path, hint: str) -> None:
    """load_state_dict, with a mismatch reported as one line naming the file, the first key that differs
    and what to do (`hint`)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    resized = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if resized:
        key = resized[0]
        what = f"{key} has shape {tuple(state_dict[key].shape)} there, {tuple(own[key].shape)} here" + (
            f" (and {len(resized) - 1} more)" if len(resized) > 1 else ""
        )
    elif missing or unexpected:
        what = ", ".join(
            f"{label} {keys[0]}" + (f" (+{len(keys) - 1} more)" if len(keys) > 1 else "")
            for label, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        )
    else:
        what = None
    if what:
        raise DlrunError(f"{path} does not fit this model: {what}; {hint}")
    model.load_state_dict(state_dict)


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


# ----------------------------------------------------------------------------------------- writing
class CheckpointSaver:
    """Writes last.ckpt and best.ckpt of one run dir (rank 0 only). `snapshot()` builds the checkpoint dict.

    best.ckpt is written when the monitored metric improved; between last.ckpt saves (every_n_epochs > 1) a
    CPU copy taken at the better epoch waits for the next save, so best.ckpt never holds a later epoch."""

    def __init__(
        self,
        run_dir: Path,
        snapshot: Callable[[], dict],
        enabled: bool,
        every_n_epochs: int,
        is_main: bool = True,
    ):
        if every_n_epochs < 1:
            raise DlrunError(f"trainer.checkpoint_every_n_epochs={every_n_epochs} must be >= 1")
        self.run_dir, self.snapshot = Path(run_dir), snapshot
        self.enabled, self.every, self.is_main = enabled, every_n_epochs, is_main
        self._best_pending = None

    @property
    def last(self) -> Path:
        return self.run_dir / LAST

    @property
    def best(self) -> Path:
        return self.run_dir / BEST

    def epoch_end(self, epoch: int, improved: bool, final: bool) -> bool:
        """Returns whether last.ckpt was written."""
        if not (self.enabled and self.is_main):
            return False
        due = epoch % self.every == 0 or final
        if improved and not due:
            self._best_pending = cpu_copy(self.snapshot())
        if not due:
            return False
        ckpt = self.snapshot()
        save_atomic(ckpt, self.last)
        if improved:
            save_atomic(ckpt, self.best)
            self._best_pending = None
        self._flush_best()
        return True

    def interrupted(self, epoch: int, step: int) -> None:
        """A stop signal: last.ckpt where the run stands (the last optimizer step), plus a pending best."""
        if not (self.enabled and self.is_main):
            return
        save_atomic(self.snapshot(), self.last)
        self._flush_best()
        log.warning("interrupted at epoch %d, step %d; resume with %s", epoch, step, self.resume_hint())

    def _flush_best(self) -> None:
        if self._best_pending is not None:
            save_atomic(self._best_pending, self.best)
        self._best_pending = None

    def resume_hint(self) -> str:
        return shlex.quote(f"trainer.resume={self.last}")


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files of checkpoint writes that a kill -9 cut short (their writer's pid is gone)."""
    for tmp in Path(run_dir).glob(".*.tmp*"):
        parts = tmp.name.split(".")
        pid = next((int(p) for p in parts if p.isdigit()), None)
        if pid is not None and pid != os.getpid() and not _alive(pid):
            tmp.unlink(missing_ok=True)
            log.info("removed %s, left by an interrupted write", tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------------------ locking
class RunLock:
    """An exclusive fcntl lock on a run dir, held while a process trains in it or continues it. The kernel
    drops it when the process ends, however it ends, so a lock never outlives its run."""

    def __init__(self):
        self._files = []

    def acquire(self, run_dir: Path, purpose: str) -> None:
        run_dir = Path(run_dir)
        f = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115  (held open until release)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise DlrunError(
                f"{run_dir} is in use by {holder}; wait for it to end, or start a separate run "
                f"(not trainer.resume=auto) — {purpose}"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        self._files.append(f)

    def release(self) -> None:
        for f in self._files:
            f.close()
        self._files = []


def is_locked(run_dir: Path) -> bool:
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


# ----------------------------------------------------------------------------------------- resuming
def resolve_resume(resume, run_dir: Path, runs_root: Path) -> Path | None:
    """trainer.resume: null (fresh), `auto`, a .ckpt file or a run dir (its last.ckpt). A Slurm job that was
    requeued (SLURM_RESTART_COUNT > 0: preempted or out of time, saved on the signal) continues its own run
    dir's last.ckpt whatever trainer.resume says."""
    own = Path(run_dir) / LAST
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0 and own.is_file():
        log.info(
            "requeued Slurm job (SLURM_RESTART_COUNT=%s): continuing %s",
            os.environ["SLURM_RESTART_COUNT"],
            own,
        )
        return own
    if resume in (None, "", False):
        return None
    if str(resume) == "auto":
        found = find_resumable(run_dir, runs_root)
        if found is None:
            log.info("trainer.resume=auto: no unfinished run found, starting fresh")
        return found
    path = Path(resume)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise DlrunError(f"trainer.resume={resume}: no checkpoint at {path}")
    return path


def find_resumable(run_dir: Path, runs_root: Path) -> Path | None:
    """For trainer.resume=auto: this run dir's last.ckpt, else the newest last.ckpt under runs_root whose run
    did not finish, is not running now, and was not continued by another run (runs record what they continue
    in metrics.json when they start, so a chain of kill -9s is followed to its end). A run found `running`
    with nobody holding its lock died without a word: it is marked `killed`."""
    own = Path(run_dir) / LAST
    if own.is_file():
        return own
    candidates, continued = [], set()
    for ckpt in Path(runs_root).glob(f"*/{LAST}"):
        folder = ckpt.parent
        if folder.resolve() == Path(run_dir).resolve():
            continue
        metrics_file = folder / METRICS_FILE
        summary = read_summary(metrics_file)
        if summary is None and metrics_file.is_file():
            continue  # unreadable: read_summary warned
        summary = summary or {}
        if summary.get("resumed_from"):
            continued.add(Path(summary["resumed_from"]).resolve())
        if summary.get("status") not in UNFINISHED or is_locked(folder):
            continue
        if summary.get("status") == "running":
            write_json(metrics_file, summary | {"status": "killed"})
        candidates.append(ckpt)
    candidates = [c for c in candidates if c.resolve() not in continued]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


# Keys a resumed run may change without being asked: how long it trains, where and how it reports.
RESUMABLE_CHANGES = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.resume",
    "trainer.allow_config_changes",
    "trainer.progress_bar",
    "trainer.log_every_n_steps",
    "trainer.curves",
    "trainer.curves_log_scale",
    "trainer.checkpoint",
    "trainer.checkpoint_every_n_epochs",
    "trainer.num_threads",
    "trainer.device",
    "trainer.strategy",
    "trainer.ddp_backend",
    "trainer.early_stopping",
    "trainer.callbacks",
    "logger",
    "paths",
    "hydra",
    "data.root",
    "data.download",
    "mode",
    "ckpt_path",
    "optimized_metric",
    "book",
    "callbacks",
)


def refuse_config_changes(path: Path, saved_yaml: str | None, current_yaml: str | None, allowed) -> None:
    """trainer.allow_config_changes: true (anything), or a list of key prefixes that may differ."""
    if allowed is True:
        return
    changed = config_changes(saved_yaml, current_yaml, allowed or ())
    if changed:
        keys = ",".join(c.split(" ", 1)[0] for c in changed)
        raise DlrunError(
            f"{path} was trained with another config: {'; '.join(changed)}. Resume with the same settings, "
            f"or accept the change with 'trainer.allow_config_changes=[{keys}]'"
        )


def config_changes(saved_yaml: str | None, current_yaml: str | None, allowed=()) -> list[str]:
    """The dotted keys whose values differ between a checkpoint's config and today's, except RESUMABLE_CHANGES
    and `allowed` (prefixes)."""
    if not saved_yaml or not current_yaml:
        return []
    from omegaconf import OmegaConf

    def flat(node, prefix=""):
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                out |= flat(value, f"{prefix}{key}.")
            return out or {prefix[:-1]: {}}
        return {prefix[:-1]: node}

    saved = flat(OmegaConf.to_container(OmegaConf.create(saved_yaml)))
    now = flat(OmegaConf.to_container(OmegaConf.create(current_yaml)))
    skip = tuple(RESUMABLE_CHANGES) + tuple(allowed)
    differ = []
    for key in sorted(set(saved) | set(now)):
        if any(key == p or key.startswith(p + ".") for p in skip):
            continue
        if saved.get(key, "<absent>") != now.get(key, "<absent>"):
            differ.append(f"{key} ({saved.get(key, '<absent>')!r} -> {now.get(key, '<absent>')!r})")
    return differ


# ------------------------------------------------------------------------- a trainer's state
def snapshot(trainer) -> dict:
    """Everything a resumed run needs to continue exactly where `trainer` stands (the last optimizer step)."""
    from dataclasses import asdict

    from dlrun import __version__

    return {
        "model": trainer.model.state_dict(),
        **trainer.optimization.state_dict(),
        "state": asdict(trainer.state),
        "train_sums": trainer._sums_at_step.state_dict() if trainer.state.batch_in_epoch else None,
        "rng": rng_state(),
        "config": trainer.config_yaml,
        # what the weights mean beyond the model config, e.g. a text vocabulary (checked by predict)
        "data": trainer.data.checkpoint_state(),
        "dlrun_version": __version__,
    }


def restore(trainer, path: Path) -> None:
    """Load a snapshot into `trainer` (after refusing a changed config), and lock the run it continues."""
    ckpt = load(path)
    refuse_config_changes(path, ckpt.get("config"), trainer.config_yaml, trainer.allow_config_changes)
    load_model_weights(trainer.model, ckpt["model"], path, "resume with the run's config")
    trainer.optimization.load_state_dict(ckpt)
    trainer.state = type(trainer.state)(**ckpt["state"])
    # Mid-epoch sums are rank 0's share (DDP): rank 0 carries them on, the other ranks start from zero.
    if ckpt["train_sums"] is not None and trainer.dist.is_main:
        trainer.train_sums.load_state_dict(ckpt["train_sums"], trainer.device)
    set_rng_state(ckpt["rng"])
    trainer.resumed_from = str(path)
    source = Path(path).parent
    if trainer.dist.is_main and source.resolve() != trainer.run_dir.resolve():
        trainer.lock.acquire(source, "it is being continued")  # one continuation per run
        remove_stale_temp_files(source)
    state = trainer.state
    where = f"epoch {state.epoch}" + (f", batch {state.batch_in_epoch}" if state.batch_in_epoch else "")
    log.info("resumed from %s (%s, step %d)", path, where, state.global_step)
