"""Any torchvision classification architecture by name, adapted to the data's channels and classes."""

from pathlib import Path
from typing import Literal

import torch
import torchvision
from torch import nn

from dlrun.errors import DlrunError, first_line
from dlrun.models.init import init_weights


def _names() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def _conv_like(old: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )


def _load(name: str, weights: str | None, num_classes: int, image_size: int) -> nn.Module:
    if name not in _names():
        raise DlrunError(
            f"model.name={name!r} is not a torchvision classification model; choose one of "
            f"{', '.join(_names())}"
        )
    kwargs = {"weights": weights} if weights else {"num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False  # one output, as the classification task expects
        if not weights:
            kwargs["init_weights"] = True  # torchvision's own init, stated to silence its FutureWarning
    if name.startswith("vit_"):
        kwargs["image_size"] = image_size
    try:
        return torchvision.models.get_model(name, **kwargs)
    except KeyError:
        valid = ", ".join(w.name for w in torchvision.models.get_model_weights(name))
        raise DlrunError(
            f"model.weights={weights!r} is unknown for {name}; choose one of DEFAULT, {valid}"
        ) from None
    except (ValueError, OSError, RuntimeError) as err:
        cached = weights_file(name, weights)
        if cached is not None and not cached.is_file():
            raise DlrunError(
                f"model.weights={weights}: {name}'s pretrained weights are not cached ({cached}) and "
                f"downloading them failed ({first_line(err)}); copy the file there (TORCH_HOME sets the "
                "folder) or train from scratch with model.weights=null"
            ) from None
        raise DlrunError(f"model {name} (weights={weights}): {first_line(err)}") from None


def weights_file(name: str, weights: str) -> Path | None:
    """Where torch.hub keeps the file of a torchvision weights name (None: no such weights)."""
    try:
        enum = torchvision.models.get_model_weights(name)
        entry = getattr(enum, weights) if weights == "DEFAULT" else enum[weights]
    except (KeyError, AttributeError, ValueError):
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name


class TorchvisionModel(nn.Module):
    """torchvision.models.get_model(name, weights=...) with the first convolution taking `in_channels` and
    the classifier giving `num_classes`. Pretrained first-layer filters are summed over RGB and shared
    evenly by the new channels (a grey image then looks like its RGB copy); a replaced classifier starts
    from scratch (`head_init=xavier`: the book's Xavier-uniform weights). Fine-tuning (book 13.2):
    `freeze=true` trains the head alone; `head_parameters()` is what `task.head_lr_mult` speeds up."""

    def __init__(
        self,
        name: str,
        in_channels: int = 3,
        num_classes: int = 1000,
        image_size: int = 224,
        weights: str | None = None,
        init: str = "default",
        head_init: Literal["default", "xavier"] = "default",
        freeze: bool = False,
    ):
        super().__init__()
        if weights and init != "default":
            raise DlrunError(
                f"model.init={init!r} would overwrite the pretrained weights; use model.init=default"
            )
        self.net = _load(name, weights, num_classes, image_size)
        layers = [(n, m) for n, m in self.net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]

        first_name, first = next((n, m) for n, m in layers if isinstance(m, nn.Conv2d))
        if first.in_channels != in_channels:
            conv = _conv_like(first, in_channels, first.out_channels)
            if weights:
                with torch.no_grad():
                    mean = first.weight.mean(dim=1, keepdim=True)
                    conv.weight.copy_(mean.expand_as(conv.weight) * (first.in_channels / in_channels))
                    if first.bias is not None:
                        conv.bias.copy_(first.bias)
            _replace(self.net, first_name, conv)
            if hasattr(self.net, "transform_input"):  # googlenet / inception_v3 re-normalise RGB inputs
                self.net.transform_input = False

        last_name, last = layers[-1]
        out_features = last.out_features if isinstance(last, nn.Linear) else last.out_channels
        if out_features != num_classes:
            head = (
                nn.Linear(last.in_features, num_classes)
                if isinstance(last, nn.Linear)
                else _conv_like(last, last.in_channels, num_classes)
            )
            _replace(self.net, last_name, head)
        if not weights:
            init_weights(self, init)
        self.head_name = last_name
        if head_init == "xavier":
            head = self.net.get_submodule(last_name)
            nn.init.xavier_uniform_(head.weight)
        if freeze:
            body = {id(p) for p in self.head_parameters()}
            for param in self.parameters():
                param.requires_grad_(id(param) in body)

    def head_parameters(self) -> list[nn.Parameter]:
        """The classifier's parameters (the layer replaced for num_classes)."""
        return list(self.net.get_submodule(self.head_name).parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
