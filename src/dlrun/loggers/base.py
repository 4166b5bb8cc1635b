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
