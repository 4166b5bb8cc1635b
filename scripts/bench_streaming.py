"""images/s of dlrun's streaming image folder (data=image_folder) against a bare DataLoader loop on the same
folder: both decode with torchvision.io and augment per example (flip + padded random crop) in the workers.

    python scripts/bench_streaming.py --images 3000 --workers 0 1 2 --out docs/bench_streaming.png
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import decode_image, write_png
from torchvision.transforms import v2

from dlrun.data.augment import Augment
from dlrun.data.folders import ImageFolderData, scan


def make_folder(root: Path, n: int, size: int, classes: int = 10) -> None:
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", n), ("val", classes)):
        for i in range(count):
            folder = root / split / f"c{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            write_png(
                (torch.rand(3, size, size, generator=g) * 255).to(torch.uint8), str(folder / f"{i}.png")
            )


def transforms(size: int) -> list:
    return [v2.RandomHorizontalFlip(), v2.RandomCrop(size, padding=4)]


class Bare(Dataset):
    """What a hand-written loop would use: decode, scale, augment."""

    def __init__(self, files, labels, size):
        self.files, self.labels, self.t = files, labels, v2.Compose(transforms(size))

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        x = v2.functional.to_dtype(decode_image(str(self.files[i])), torch.float32, scale=True)
        return self.t(x), self.labels[i]


def rate(batches, n: int) -> float:
    start = time.perf_counter()
    for x, _ in batches:
        x.sum()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--out", type=Path, default=None, help="a PNG bar chart")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_folder(root, args.images, args.size)
        files, labels, _ = scan(root / "train")
        for workers in args.workers:
            data = ImageFolderData(
                root,
                args.batch_size,
                args.size,
                augment=Augment(train=transforms(args.size)),
                num_workers=workers,
                prefetch_factor=4,
            )
            data.setup(device, seed=0)
            rate(data.train_loader(epoch=0), len(files))  # warm-up: starts the persistent workers
            dlrun = max(rate(data.train_loader(epoch=e), len(files)) for e in range(1, args.epochs + 1))
            bare_rates = []
            for _ in range(args.epochs + 1):
                loader = DataLoader(
                    Bare(files, labels, args.size),
                    args.batch_size,
                    shuffle=True,
                    num_workers=workers,
                    pin_memory=device.type == "cuda",
                    prefetch_factor=4 if workers else None,
                )
                bare_rates.append(rate(((x.to(device), y) for x, y in loader), len(files)))
            bare = max(bare_rates[1:])
            results.append({"workers": workers, "dlrun": round(dlrun), "bare": round(bare)})
            print(json.dumps(results[-1] | {"device": str(device), "images": len(files)}), flush=True)
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        xs = range(len(results))
        ax.bar([x - 0.2 for x in xs], [r["dlrun"] for r in results], 0.4, label="dlrun image_folder")
        ax.bar([x + 0.2 for x in xs], [r["bare"] for r in results], 0.4, label="bare DataLoader")
        ax.set_xticks(list(xs), [f"{r['workers']} workers" for r in results])
        ax.set_ylabel("images/s")
        ax.set_title(f"{args.images} PNGs {args.size}px, flip + crop, {device}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()
