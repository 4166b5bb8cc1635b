"""Image augmentation with torchvision.transforms.v2, seeded by (seed, epoch, batch), not the RNG state.

An `Augment` holds three v2 pipelines on float images in [0, 1]: `train` (random; training batches only),
`test` (deterministic; held-out batches only, e.g. Resize + CenterCrop) and `common` (every batch, after
either, e.g. Normalize).

- Per sample (`sample`, in the DataLoader workers of image folders): the v2 Compose, with torch's RNG seeded
  from the sample's key, so an example's augmentation depends on (seed, epoch, batch, position) alone.
- Whole batches on the device (`batch`, for in-memory sets): v2 applies one draw to a whole batch, so the
  random transforms the book uses (flips, RandomCrop, RandomResizedCrop, ColorJitter without hue) have
  vectorised versions here that draw per example from a generator seeded by the batch's key; deterministic
  transforms run on the batch as they are; any other transform runs per example (correct, but slower).
"""

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.ops import roi_align
from torchvision.transforms import v2

log = logging.getLogger("dlrun")

# Transforms with no randomness: applying them to a batch is applying them to each example.
DETERMINISTIC = (v2.Resize, v2.CenterCrop, v2.Normalize, v2.Pad, v2.Grayscale, v2.ToDtype, v2.Identity)
_MIX = 1_000_003


def mix(*parts: int) -> int:
    """One 63-bit seed from several integers (seed, epoch, batch, ...)."""
    key = 0
    for part in parts:
        key = (key * _MIX + int(part) + 1) % (2**63 - 1)
    return key


class Augment:
    def __init__(
        self, train: Sequence[Callable] = (), test: Sequence[Callable] = (), common: Sequence[Callable] = ()
    ):
        self.train, self.test, self.common = list(train), list(test), list(common)
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"Augment(train={self.train}, test={self.test}, common={self.common})"

    def pipeline(self, train: bool) -> list[Callable]:
        return (self.train if train else self.test) + self.common

    # ---------------------------------------------------------------- per example
    def sample(self, image: Tensor, train: bool, key: int) -> Tensor:
        """One (C, H, W) float image through the train (seeded by key) or test pipeline, then common."""
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(key)
            for transform in self.pipeline(train):
                image = transform(image)
        return image

    # ---------------------------------------------------------------- whole batches
    def batch(self, x: Tensor, train: bool, key: int) -> Tensor:
        """A (N, C, H, W) float batch, random draws per example from a generator seeded by key."""
        generator = None
        for transform in self.pipeline(train):
            if isinstance(transform, DETERMINISTIC):
                x = transform(x)
                continue
            if generator is None:
                generator = torch.Generator(device=x.device).manual_seed(key)
            x = self._batched(transform, x, generator)
        return x

    def _batched(self, t: Callable, x: Tensor, g: torch.Generator) -> Tensor:
        if isinstance(t, v2.RandomHorizontalFlip | v2.RandomVerticalFlip):
            dim = -1 if isinstance(t, v2.RandomHorizontalFlip) else -2
            flip = _uniform(g, x, len(x)) < t.p
            return torch.where(flip[:, None, None, None], x.flip(dim), x)
        if isinstance(t, v2.RandomCrop) and not t.pad_if_needed:
            return random_crop(x, t.size, t.padding, t.fill, t.padding_mode, g)
        if isinstance(t, v2.RandomResizedCrop):
            return random_resized_crop(x, t.size, t.scale, t.ratio, g)
        if isinstance(t, v2.ColorJitter) and t.hue is None:
            return color_jitter(x, t.brightness, t.contrast, t.saturation, g)
        return self._per_example(t, x, g)

    def _per_example(self, t: Callable, x: Tensor, g: torch.Generator) -> Tensor:
        name = type(t).__name__
        if name not in self._warned:
            self._warned.add(name)
            log.info("augment: %s has no batched version here; it runs per example", name)
        keys = torch.randint(2**62, (len(x),), generator=g, device=x.device).tolist()
        out = []
        for image, key in zip(x, keys, strict=True):
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(key)
                out.append(t(image))
        return torch.stack(out)


def _uniform(g: torch.Generator, x: Tensor, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=g, device=x.device)


def random_crop(x: Tensor, size, padding, fill, padding_mode: str, g: torch.Generator) -> Tensor:
    """v2.RandomCrop per example: pad, then a uniformly placed (h, w) window of each image."""
    if padding:
        left, top, right, bottom = padding
        if padding_mode == "constant":
            value = fill.get("others", 0) if isinstance(fill, dict) else (fill or 0)
            x = F.pad(x, (left, right, top, bottom), value=float(value))
        else:
            x = F.pad(x, (left, right, top, bottom), mode=padding_mode)
    n, _, height, width = x.shape
    h, w = size
    top = (_uniform(g, x, n) * (height - h + 1)).long()
    left = (_uniform(g, x, n) * (width - w + 1)).long()
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, :]
    return x[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def random_resized_crop(x: Tensor, size, scale, ratio, g: torch.Generator, tries: int = 10) -> Tensor:
    """v2.RandomResizedCrop per example: torchvision's box sampling (10 tries, then the central box of the
    closest allowed aspect ratio), vectorised; crop and bilinear resize in one torchvision.ops.roi_align."""
    n, _, height, width = x.shape
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio, dtype=torch.float, device=x.device))
    target = area * (scale[0] + _uniform(g, x, n, tries) * (scale[1] - scale[0]))
    aspect = torch.exp(log_ratio[0] + _uniform(g, x, n, tries) * (log_ratio[1] - log_ratio[0]))
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.float().argmax(dim=1, keepdim=True)
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], ok.any(dim=1)
    top = (_uniform(g, x, n) * (height - h + 1)).floor()
    left = (_uniform(g, x, n) * (width - w + 1)).floor()
    # the fallback: the whole image cut to the nearest allowed aspect ratio, centred
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    w, h = torch.where(found, w, fw), torch.where(found, h, fh)
    top = torch.where(found, top, (height - fh) // 2)
    left = torch.where(found, left, (width - fw) // 2)
    boxes = torch.stack([torch.arange(n, device=x.device, dtype=x.dtype), left, top, left + w, top + h], 1)
    out_h, out_w = size
    # sampling_ratio=0: ceil(box / output) samples per output pixel, averaged (antialiasing when shrinking)
    return roi_align(x, boxes, (out_h, out_w), spatial_scale=1.0, sampling_ratio=0, aligned=True)


def _gray(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def color_jitter(x: Tensor, brightness, contrast, saturation, g: torch.Generator) -> Tensor:
    """v2.ColorJitter (no hue) per example, in the fixed order brightness, contrast, saturation."""
    n = len(x)

    def factor(bounds):
        low, high = bounds
        return (low + _uniform(g, x, n) * (high - low))[:, None, None, None]

    if brightness is not None:
        x = (x * factor(brightness)).clamp(0, 1)
    if contrast is not None:
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        c = factor(contrast)
        x = (c * x + (1 - c) * mean).clamp(0, 1)
    if saturation is not None:
        s = factor(saturation)
        x = (s * x + (1 - s) * _gray(x)).clamp(0, 1)
    return x
