"""Generative adversarial networks (1.0 edition, 20.1-20.2): the discriminator and the generator take turns,
each with its own optimizer — a task that runs its own updates (`automatic_optimization = False`).

Per batch, as the book's update_D / update_G: draw Z; the discriminator steps on real X (label 1) and the
detached G(Z) (label 0), loss (BCE(real) + BCE(fake)) / 2; then the generator steps on BCE(D(G(Z)), 1).
Both losses are summed over the batch (the book's `reduction='sum'`); the logged loss_D and loss_G are per
example. Images are scaled to [-1, 1] for the generator's tanh.

At the end: `samples.csv` (generated points, header x1,x2, ...) and `samples.png` (real and generated on one
scatter) for point data, with their mean and covariance beside the real ones in `samples.json`; for images,
`samples/epoch_<n>.png` grids every epoch (a fixed latent batch, so the grids show progress).
"""

import csv
import json
import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from dlrun.atomic import replacing
from dlrun.engine.contracts import FitContext
from dlrun.errors import DlrunError
from dlrun.tasks.base import Task

log = logging.getLogger("dlrun")


class GANTask(Task):
    automatic_optimization = False

    def __init__(
        self,
        discriminator_lr: float | None = None,
        generator_lr: float | None = None,
        num_samples: int = 1000,
        grid_size: int = 64,
        sample_seed: int = 0,
        monitor: str | None = None,
        mode: str = "min",
    ):
        self.discriminator_lr, self.generator_lr = discriminator_lr, generator_lr
        self.num_samples, self.grid_size, self.sample_seed = num_samples, grid_size, sample_seed
        self.monitor, self.mode = monitor, mode
        self.loss = nn.BCEWithLogitsLoss(reduction="sum")

    def configure_optimizers(self, model: nn.Module, optimizer, scheduler=None) -> tuple[dict, dict]:
        """One `optim` config for both, each with its own lr (task.discriminator_lr / generator_lr; null:
        optim.lr). Schedulers, if any, follow both."""
        if not all(hasattr(model, name) for name in ("generator", "discriminator", "latent_shape")):
            raise DlrunError(f"task=gan needs a GAN model (model=gan or dcgan), not {type(model).__name__}")
        lrs = {"discriminator": self.discriminator_lr, "generator": self.generator_lr}
        optimizers = {
            name: optimizer(getattr(model, name).parameters(), **({"lr": lr} if lr is not None else {}))
            for name, lr in lrs.items()
        }
        schedulers = {n: scheduler(o) for n, o in optimizers.items()} if scheduler is not None else {}
        return optimizers, schedulers

    @staticmethod
    def real(batch) -> Tensor:
        x = batch[0]
        return x * 2 - 1 if x.ndim == 4 else x  # images in [0, 1] -> [-1, 1], the generator's range

    def latent(self, model: nn.Module, n: int, device, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn((n, *model.latent_shape), device=device, generator=generator)

    def training_step(self, model: nn.Module, batch, optim) -> tuple[Tensor, dict[str, Tensor], int]:
        x = self.real(batch)
        n = x.shape[0]
        z = self.latent(model, n, x.device)
        ones, zeros = torch.ones(n, device=x.device), torch.zeros(n, device=x.device)

        optim.zero_grad("discriminator")
        real_y = model.discriminator(x).reshape(n)
        fake_y = model.discriminator(model.generator(z).detach()).reshape(n)
        loss_d = (self.loss(real_y.float(), ones) + self.loss(fake_y.float(), zeros)) / 2
        optim.backward(loss_d)
        optim.step("discriminator")

        optim.zero_grad("generator")
        fake_y = model.discriminator(model.generator(z)).reshape(n)
        loss_g = self.loss(fake_y.float(), ones)
        optim.backward(loss_g)
        optim.step("generator")
        stats = {"loss_D": loss_d.detach(), "loss_G": loss_g.detach()}
        return (loss_d + loss_g).detach() / n, stats, n

    def validation_step(self, model: nn.Module, batch):
        raise DlrunError("task=gan has no validation; its data module holds no held-out set")

    @staticmethod
    def compute(sums: dict[str, float], count: int) -> dict[str, float]:
        if count == 0:
            return {}
        return {"loss_D": sums["loss_D"] / count, "loss_G": sums["loss_G"] / count}

    # ------------------------------------------------------------------ samples
    @torch.no_grad()
    def generate(self, model: nn.Module, n: int) -> Tensor:
        """n samples from a fixed latent draw (its own generator: the run's random stream is left alone)."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(self.sample_seed)
        samples = model.generator(self.latent(model, n, device, gen)).float().cpu()
        model.train(was_training)
        return samples

    def on_epoch_end(self, model: nn.Module, ctx: FitContext) -> None:
        if not ctx.is_main or len(model.latent_shape) == 1:
            return  # point data: one figure at the end
        import torchvision

        images = self.generate(model, self.grid_size).add(1).div(2).clamp(0, 1)
        path = Path(ctx.run_dir) / "samples" / f"epoch_{ctx.epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path, ".png") as tmp:
            torchvision.utils.save_image(images, tmp, nrow=int(len(images) ** 0.5))
        ctx.logger.log_image("samples", (images_grid(images) * 255).byte().numpy(), ctx.epoch)

    def on_fit_end(self, model: nn.Module, ctx: FitContext) -> None:
        samples = self.generate(model, self.num_samples)
        if samples.ndim != 2:
            return
        run_dir = Path(ctx.run_dir)
        dims = samples.shape[1]
        with replacing(run_dir / "samples.csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([f"x{i + 1}" for i in range(dims)])
            writer.writerows([[f"{v:.6g}" for v in row] for row in samples.tolist()])
        stats = {"generated": moments(samples)}
        real = ctx.data.x_train.float().cpu()
        stats["real_data"] = moments(real)
        if hasattr(ctx.data, "true_mean"):
            stats["distribution"] = {"mean": ctx.data.true_mean.tolist(), "cov": ctx.data.true_cov.tolist()}
        with replacing(run_dir / "samples.json") as tmp:
            tmp.write_text(json.dumps(stats, indent=2))
        plot_points(real, samples, run_dir / "samples.png")
        g = stats["generated"]
        log.info("generated mean %s, covariance %s", _fmt(g["mean"]), _fmt(g["cov"]))
        if "distribution" in stats:
            d = stats["distribution"]
            log.info("   target mean %s, covariance %s", _fmt(d["mean"]), _fmt(d["cov"]))
        log.info(
            "samples: %s, %s, %s", run_dir / "samples.csv", run_dir / "samples.png", run_dir / "samples.json"
        )


def moments(points: Tensor) -> dict:
    return {"mean": points.mean(0).tolist(), "cov": torch.cov(points.T).reshape(points.shape[1], -1).tolist()}


def _fmt(values) -> str:
    if isinstance(values, list):
        return "[" + ", ".join(_fmt(v) for v in values) + "]"
    return f"{values:.3f}"


def images_grid(images: Tensor) -> Tensor:
    """(N, C, H, W) in [0, 1] -> an (H', W', 3) grid for loggers."""
    import torchvision

    grid = torchvision.utils.make_grid(images, nrow=int(len(images) ** 0.5))
    return grid.permute(1, 2, 0)[..., :3] if grid.shape[0] >= 3 else grid.permute(1, 2, 0).expand(-1, -1, 3)


def plot_points(real: Tensor, generated: Tensor, path: Path) -> None:
    """The book's figure: real and generated points on one scatter (first two coordinates)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(real[:, 0], real[:, 1], s=6, alpha=0.5, label="real")
    ax.scatter(generated[:, 0], generated[:, 1], s=6, alpha=0.5, label="generated")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.legend()
    with replacing(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
