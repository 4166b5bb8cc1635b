"""Attention weights as heatmaps (the book's `show_heatmaps`): a panel per layer and head, off-screen."""

from pathlib import Path

import numpy as np
from torch import Tensor

from dlrun.atomic import replacing


def attention_figure(maps: list[Tensor], rows: list[str], columns: list[str], title: str):
    """maps: one (heads, queries, keys) tensor per layer, cut to len(rows) x len(columns)."""
    from matplotlib.figure import Figure  # Agg through the OO API: no display, no global pyplot state

    layers, heads = len(maps), maps[0].shape[0]
    size = 0.9 + 0.28 * max(len(rows), len(columns))
    fig = Figure(figsize=(0.6 + size * heads, 0.5 + size * layers), layout="constrained")
    axes = fig.subplots(layers, heads, squeeze=False)
    image = None
    for layer, weights in enumerate(maps):
        for head in range(heads):
            ax = axes[layer][head]
            panel = weights[head, : len(rows), : len(columns)].float().cpu().numpy()
            image = ax.imshow(panel, cmap="Reds", vmin=0.0, vmax=1.0)
            ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
            ax.set_yticks(range(len(rows)), rows if head == 0 else [""] * len(rows), fontsize=7)
            if layers > 1 or heads > 1:
                ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=7)
    fig.colorbar(image, ax=axes, shrink=0.6)
    fig.suptitle(title, fontsize=9)
    return fig


def render(fig, dpi: int = 100) -> np.ndarray:
    """The figure drawn once, as an (H, W, 3) uint8 image: for a PNG file and TensorBoard alike."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image  # matplotlib's own dependency

    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, ".png") as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
