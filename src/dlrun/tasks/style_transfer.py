"""Neural style transfer (13.12): the model's image (dlrun.models.style) starts as the content image and is
optimized so that its VGG features keep the content image's (content loss) and its Gram matrices match the
style image's (style loss), with total variation smoothing. Every training batch is the (content, style)
pair; one step per epoch, as the book's 500 epochs. Writes stylized.png every `save_every` epochs and at
the end."""

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from dlrun.atomic import replacing
from dlrun.engine.contracts import FitContext
from dlrun.errors import DlrunError
from dlrun.tasks.base import Task

log = logging.getLogger("dlrun")


def gram(x: Tensor) -> Tensor:
    """The book's Gram matrix of a (1, c, h, w) feature map, normalised by c·hw."""
    c, n = x.shape[1], x.numel() // x.shape[1]
    x = x.reshape(c, n)
    return x @ x.T / (c * n)


def tv_loss(y: Tensor) -> Tensor:
    return 0.5 * (
        (y[:, :, 1:, :] - y[:, :, :-1, :]).abs().mean() + (y[:, :, :, 1:] - y[:, :, :, :-1]).abs().mean()
    )


class StyleTransferTask(Task):
    def __init__(
        self,
        content_weight: float = 1.0,
        style_weight: float = 1e4,
        tv_weight: float = 10.0,
        save_every: int = 50,
        monitor: str | None = None,
        mode: str = "min",
    ):
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        self.save_every, self.monitor, self.mode = save_every, monitor, mode
        self._targets = None

    @staticmethod
    def _check(model: nn.Module) -> None:
        if not (hasattr(model, "image") and hasattr(model, "extract")):
            raise DlrunError(f"task=style_transfer needs model=style_vgg, not {type(model).__name__}")

    def configure_optimizers(self, model: nn.Module, optimizer, scheduler=None) -> tuple[dict, dict]:
        self._check(model)
        opt = optimizer([model.image])  # the image is the only thing trained
        return {"default": opt}, ({"default": scheduler(opt)} if scheduler is not None else {})

    def on_fit_start(self, model: nn.Module, ctx: FitContext) -> None:
        """The image starts as the content image (a resumed run then loads its own image over it)."""
        self._check(model)
        content = ctx.data.content.to(model.image.device)
        if content.shape != model.image.shape:
            raise DlrunError(
                f"the content image is {tuple(content.shape[-2:])} but model.height/width make "
                f"{tuple(model.image.shape[-2:])}; set them equal to data.height/width"
            )
        with torch.no_grad():
            model.image.copy_(content)

    def targets(self, model: nn.Module, content: Tensor, style: Tensor):
        if self._targets is None or self._targets[0][0].device != content.device:
            with torch.no_grad():
                contents_y, _ = model.extract(content)
                _, styles_y = model.extract(style)
            self._targets = ([y.detach() for y in contents_y], [gram(y).detach() for y in styles_y])
        return self._targets

    def step(self, model: nn.Module, batch):
        content, style = batch
        contents_y, grams_y = self.targets(model, content, style)
        contents_hat, styles_hat = model()
        content_l = sum(((y_hat - y) ** 2).mean() for y_hat, y in zip(contents_hat, contents_y, strict=True))
        style_l = sum(((gram(y_hat) - g) ** 2).mean() for y_hat, g in zip(styles_hat, grams_y, strict=True))
        tv_l = tv_loss(model.image)
        loss = self.content_weight * content_l + self.style_weight * style_l + self.tv_weight * tv_l
        stats = {
            "loss": loss.detach(),
            "content": (self.content_weight * content_l).detach(),
            "style": (self.style_weight * style_l).detach(),
            "tv": (self.tv_weight * tv_l).detach(),
        }
        return loss, stats, 1

    @staticmethod
    def compute(sums: dict[str, float], count: int) -> dict[str, float]:
        return {k: v / count for k, v in sums.items()} if count else {}

    def save(self, model: nn.Module, ctx: FitContext, name: str) -> Path:
        import torchvision

        path = Path(ctx.run_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = ctx.data.postprocess(model.image.detach().float().cpu())
        with replacing(path, ".png") as tmp:
            torchvision.utils.save_image(image, tmp)
        return path

    def on_epoch_end(self, model: nn.Module, ctx: FitContext) -> None:
        if ctx.is_main and self.save_every and ctx.epoch % self.save_every == 0:
            self.save(model, ctx, f"stylized/epoch_{ctx.epoch:04d}.png")

    def on_fit_end(self, model: nn.Module, ctx: FitContext) -> None:
        log.info("stylized image: %s", self.save(model, ctx, "stylized.png"))
