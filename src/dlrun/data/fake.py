import torch

from dlrun.data.augment import Augment
from dlrun.data.images import InMemoryImageData
from dlrun.ranges import BatchSize, OptionalBatchSize


class FakeImageData(InMemoryImageData):
    """Synthetic images: one fixed smooth random pattern per class plus Gaussian noise, all from `seed`.

    Deterministic and learnable, so a smoke run shows accuracy rising without any files.
    """

    def __init__(
        self,
        batch_size: BatchSize = 128,
        num_train: int = 2048,
        num_val: int = 512,
        channels: int = 1,
        num_classes: int = 10,
        size: int = 28,
        resize: int | None = None,
        noise: float = 0.5,
        seed: int = 0,
        val_batch_size: OptionalBatchSize = None,
        on_device: bool = False,
        augment: Augment | None = None,
    ):
        super().__init__(batch_size, channels, num_classes, size, resize, val_batch_size, on_device, augment)
        generator = torch.Generator().manual_seed(seed)
        # Smooth class patterns (random 4x4 grids, upsampled) that any model, conv or dense, can tell apart.
        coarse = (torch.rand(num_classes, channels, 4, 4, generator=generator) > 0.5).float()
        prototypes = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")

        def make(n: int):
            labels = torch.randint(num_classes, (n,), generator=generator)
            images = prototypes[labels] + noise * torch.randn(n, channels, size, size, generator=generator)
            return images.clamp_(0, 1).mul_(255).round_().to(torch.uint8), labels

        self.x_train, self.y_train = make(num_train)
        self.x_val, self.y_val = make(num_val)
