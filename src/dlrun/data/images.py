"""Image classification data held as uint8 tensors (N, C, H, W), scaled and resized per batch on device."""

from torch import Tensor
from torch.nn import functional as F

from dlrun.data.augment import Augment
from dlrun.data.in_memory import InMemoryData
from dlrun.errors import DlrunError
from dlrun.ranges import BatchSize, OptionalBatchSize


class InMemoryImageData(InMemoryData):
    def __init__(
        self,
        batch_size: BatchSize,
        channels: int,
        num_classes: int,
        size: int,
        resize: int | None = None,
        val_batch_size: OptionalBatchSize = None,
        on_device: bool = False,
        augment: Augment | None = None,
    ):
        super().__init__(batch_size, val_batch_size, on_device)
        self.channels, self.num_classes, self.size, self.resize = channels, num_classes, size, resize
        self.augment = augment

    def check(self, name: str) -> None:
        """Compare the loaded tensors with what the config promised the model."""
        _, c, h, w = self.x_train.shape
        if c != self.channels or (h, w) != (self.size, self.size):
            raise DlrunError(
                f"{name} images are {c}x{h}x{w} but the config says data.channels={self.channels}, "
                f"data.size={self.size}; remove those overrides"
            )
        found = int(self.y_train.max()) + 1
        if found > self.num_classes:
            raise DlrunError(f"{name} has labels up to {found - 1} but data.num_classes={self.num_classes}")

    def transform(self, x: Tensor) -> Tensor:
        """uint8 [0, 255] -> float [0, 1] (as ToTensor), then bilinear resize of the whole batch."""
        x = x.float().div_(255.0)
        if self.resize and self.resize != x.shape[-1]:
            x = F.interpolate(
                x, size=(self.resize, self.resize), mode="bilinear", antialias=True, align_corners=False
            )
        return x

    def train_augment(self, x: Tensor, key: int) -> Tensor:
        return x if self.augment is None else self.augment.batch(x, train=True, key=key)

    def val_augment(self, x: Tensor, key: int) -> Tensor:
        return x if self.augment is None else self.augment.batch(x, train=False, key=key)
