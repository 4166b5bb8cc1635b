from torch import nn

from dlrun.errors import DlrunError
from dlrun.models.init import init_weights
from dlrun.models.layers import activation as make_activation


class MLP(nn.Sequential):
    """Flatten, then Linear + activation (+ dropout) per hidden size, then Linear(..., classes)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        hidden_sizes: list[int] = (256,),
        dropout: list[float] = (),
        activation: str = "relu",
        init: str = "normal",
    ):
        hidden_sizes, dropout = list(hidden_sizes), list(dropout)
        if dropout and len(dropout) != len(hidden_sizes):
            raise DlrunError(
                f"model.dropout has {len(dropout)} values for {len(hidden_sizes)} hidden layers; "
                "give one per hidden layer or []"
            )
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for i, hidden in enumerate(hidden_sizes):
            layers += [nn.Linear(width, hidden), make_activation(activation)]
            if dropout and dropout[i] > 0:
                layers.append(nn.Dropout(dropout[i]))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        init_weights(self, init)
