class NullLogger:
    """The logger interface; logs nothing. metrics.json and the console log are written regardless."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_config(self, config_yaml: str) -> None:
        pass

    def log_hparams(self, final_metrics: dict[str, float]) -> None:
        pass

    def log_text(self, tag: str, text: str, step: int) -> None:
        pass

    def log_image(self, tag: str, image, step: int) -> None:
        """An (H, W, 3) uint8 array (e.g. attention heatmaps)."""

    def close(self) -> None:
        pass


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested config as {"a.b.c": scalar} (other values as their str; None left out), for hparams."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        elif isinstance(value, (int, float, str, bool)):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat
