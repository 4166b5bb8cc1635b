"""What several modes share: a checkpoint's model, the first batch of a split, batch slicing."""

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from dlrun.errors import DlrunError
from dlrun.run import build, check_data_state, checkpoints_for_prediction, model_node

log = logging.getLogger("dlrun")


def checkpoint_paths(cfg: DictConfig) -> list[Path]:
    """ckpt_path resolved (before any data is loaded, so a missing one is said at once)."""
    if not cfg.get("ckpt_path"):
        raise DlrunError(
            f"mode={cfg.mode} needs ckpt_path=<run dir or .ckpt file> (a trained run's best.ckpt)"
        )
    return checkpoints_for_prediction(Path(cfg.ckpt_path))


def checkpoint_model(cfg: DictConfig, data, device: torch.device) -> tuple[torch.nn.Module, list[Path]]:
    """ckpt_path's weights (a .ckpt, a run dir's best.ckpt, a K-fold run's refit or folds: their ensemble) in
    the configured model, on `device`, in eval mode; resolved as mode=predict resolves it."""
    from dlrun.engine import checkpoint
    from dlrun.models.ensemble import Ensemble

    paths = checkpoint_paths(cfg)
    models = []
    for path in paths:
        ckpt = checkpoint.load(path)
        check_data_state(data, ckpt.get("data"), path)
        model = build(model_node(cfg), "model", **data.model_kwargs)
        checkpoint.load_model_weights(
            model, ckpt["model"], path, "use the same model options as the run that wrote it"
        )
        models.append(model)
    model = models[0] if len(models) == 1 else Ensemble(models)
    return model.to(device).eval(), paths


def first_batch(data, split: str = "val"):
    """The first batch of the held-out split (the training split when there is none)."""
    loaders = (
        (data.val_loader, lambda: data.train_loader(epoch=1))
        if split == "val"
        else (lambda: data.train_loader(epoch=1),)
    )
    for make in loaders:
        for batch in make():
            return batch
    raise DlrunError(f"data {type(data).__name__} yields no batches; check its sizes")


def batch_size_of(batch) -> int:
    """The leading dimension of the batch's first tensor."""
    tensors = [t for t in (batch if isinstance(batch, list | tuple) else [batch]) if torch.is_tensor(t)]
    if not tensors or tensors[0].dim() == 0:
        raise DlrunError("cannot tell the batch size: the batch holds no tensor with a leading dimension")
    return tensors[0].shape[0]


def head(batch, n: int):
    """The first n examples of a batch: every tensor with the batch's leading dimension is sliced."""
    size = batch_size_of(batch)

    def cut(item):
        if torch.is_tensor(item) and item.dim() > 0 and item.shape[0] == size:
            return item[:n]
        if isinstance(item, list | tuple):
            return type(item)(cut(i) for i in item)
        return item

    return cut(batch)
