"""The book's weight initialisations, applied to Linear and Conv layers (biases keep PyTorch's default)."""

from torch import nn

from dlrun.errors import DlrunError

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def init_weights(model: nn.Module, scheme: str, std: float = 0.01) -> None:
    """`xavier`: Xavier-uniform (the book's CNNs); `normal`: N(0, std) (its linear models and MLPs);
    `default`: leave PyTorch's initialisation."""
    if scheme == "default":
        return
    if scheme not in ("xavier", "normal"):
        raise DlrunError(f"model.init={scheme!r}; use xavier, normal or default")
    for module in model.modules():
        if isinstance(module, _LAYERS):
            if scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.normal_(module.weight, std=std)
