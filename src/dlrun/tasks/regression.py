"""Regression: batches of (features, targets (n, k)); squared loss; optional log-RMSE (Kaggle House)."""

import csv
import logging
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from dlrun.engine.contracts import FitContext
from dlrun.errors import DlrunError
from dlrun.tasks.base import Task

log = logging.getLogger("dlrun")

_LOSSES = ("mse", "squared")


def learned_parameters(model: nn.Module) -> tuple[Tensor | None, Tensor | None]:
    """(weight, bias) of a linear model: its `weight`/`bias` attributes, else its first nn.Linear."""
    weight = getattr(model, "weight", None)
    if isinstance(weight, Tensor):
        bias = getattr(model, "bias", None)
        return weight, bias if isinstance(bias, Tensor) else None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return module.weight, module.bias
    return None, None


def _fmt(t: Tensor) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in t.reshape(-1).tolist()) + "]"


class RegressionTask(Task):
    """`loss="mse"`: mean squared error (nn.MSELoss, the book's concise chapters and Kaggle House);
    `loss="squared"`: the book's squared_loss, (y_hat - y)^2 / 2, averaged over the batch.

    Metrics: `loss`, and with `log_rmse` the book's sqrt(mean((log(clamp(y_hat, 1)) - log y)^2)). Both are
    sums over examples divided by the count at the end, so they aggregate exactly over batches.
    """

    def __init__(
        self,
        loss: str = "squared",
        log_rmse: bool = False,
        report_weight_norm: bool = False,
        monitor: str = "val/loss",
        mode: str = "min",
    ):
        if loss not in _LOSSES:
            raise DlrunError(f"task.loss={loss!r}; use {' or '.join(_LOSSES)}")
        self.loss = loss
        self.log_rmse = log_rmse
        self.report_weight_norm = report_weight_norm
        self.monitor = monitor
        self.mode = mode
        self.data = None

    # ------------------------------------------------------------ steps
    def step(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int]:
        x, y = batch
        y_hat = model(x).float()
        y = y.float().reshape(y_hat.shape)
        n = y.shape[0]
        per_example = (y_hat - y).square().reshape(n, -1).mean(dim=1)
        if self.loss == "squared":
            per_example = per_example / 2
        loss = per_example.mean()
        stats = {"loss": per_example.detach().sum()}
        if self.log_rmse:
            with torch.no_grad():
                log_err = torch.log(y_hat.clamp(min=1.0)) - torch.log(y)
                stats["sq_log_err"] = log_err.square().reshape(n, -1).mean(dim=1).sum()
        return loss, stats, n

    @staticmethod
    def compute(sums: dict[str, float], count: int) -> dict[str, float]:
        if count == 0:
            return {}
        metrics = {"loss": sums["loss"] / count}
        if "sq_log_err" in sums:
            metrics["log_rmse"] = math.sqrt(max(sums["sq_log_err"], 0.0) / count)
        return metrics

    # ------------------------------------------------------------ hooks
    def on_fit_start(self, model: nn.Module, ctx: FitContext) -> None:
        self.data = ctx.data

    def on_epoch_end(self, model: nn.Module, ctx: FitContext) -> None:
        if self.report_weight_norm:
            weight, _ = learned_parameters(model)
            if weight is not None:
                ctx.logger.log_metrics({"weight_norm": float(weight.detach().norm())}, step=ctx.epoch)

    @torch.no_grad()
    def on_fit_end(self, model: nn.Module, ctx: FitContext) -> None:
        logger = ctx.logger
        weight, bias = learned_parameters(model)
        if weight is None:
            return
        weight = weight.detach().float().cpu()
        bias = bias.detach().float().cpu() if bias is not None else None
        lines = []
        true_w = getattr(self.data, "true_w", None)
        if true_w is not None:
            true_w = torch.as_tensor(true_w, dtype=torch.float32).reshape(-1)
            w = weight.reshape(-1)
            if w.numel() == true_w.numel():
                error = true_w - w
                if w.numel() <= 10:
                    lines.append(f"learned w: {_fmt(w)}   (true {_fmt(true_w)})")
                    lines.append(f"error in estimating w: {_fmt(error)}")
                lines.append(
                    f"||w_true - w|| = {float(error.norm()):.4g}, "
                    f"max |w_true - w| = {float(error.abs().max()):.4g}"
                )
            true_b = getattr(self.data, "true_b", None)
            if true_b is not None and bias is not None:
                b = bias.reshape(-1)
                lines.append(f"learned b: {_fmt(b)}   (true {float(true_b):.6g})")
                lines.append(f"error in estimating b: {_fmt(float(true_b) - b)}")
        if self.report_weight_norm:
            lines.append(f"L2 norm of w: {float(weight.norm()):.6g}")
        for line in lines:
            log.info(line)
        if lines:
            logger.log_text("parameters", "\n\n".join(f"`{line}`" for line in lines), step=0)

    # ---------------------------------------------------------- predict
    @torch.no_grad()
    def predict(self, model: nn.Module, data, run_dir: Path) -> Path:
        """Write run_dir/submission.csv (`<id column>,<target>`, Kaggle's format) for the data's test set."""
        x_test = getattr(data, "x_test", None)
        ids = getattr(data, "test_ids", None)
        if x_test is None or ids is None:
            raise DlrunError(
                f"{type(data).__name__} has no test set with ids to predict "
                "(give the data a test file and an id column)"
            )
        device = next(model.parameters()).device
        model.eval()
        batch = getattr(data, "val_batch_size", 1024) or 1024
        preds = torch.cat(
            [model(x_test[i : i + batch].to(device)).float().cpu() for i in range(0, len(x_test), batch)]
        )
        preds = preds.reshape(len(x_test), -1)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "submission.csv"
        id_name = getattr(data, "id_column", None) or "Id"
        target = getattr(data, "target", None) or "prediction"
        names = [target] if preds.shape[1] == 1 else [f"{target}_{i}" for i in range(preds.shape[1])]
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([id_name, *names])
            for row_id, row in zip(ids, preds.tolist(), strict=True):
                writer.writerow([row_id, *(repr(v) for v in row)])
        log.info("wrote %d predictions to %s", len(ids), path)
        return path
