from torch import nn

from dlrun.models.init import init_weights


class SoftmaxRegression(nn.Sequential):
    """Flatten, Linear(c*h*w, classes); the softmax lives in the cross-entropy loss."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, init_std: float = 0.01
    ):
        super().__init__(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))
        init_weights(self, "normal", std=init_std)
