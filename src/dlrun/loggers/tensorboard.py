from pathlib import Path

import yaml
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from dlrun.loggers.base import NullLogger, flatten


class TensorBoardLogger(NullLogger):
    """Scalars, the resolved config as text, and hparams with the final metrics, in the run directory."""

    def __init__(self, log_dir: str | Path):
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.hparams: dict = {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, global_step=step)

    def log_config(self, config_yaml: str) -> None:
        if not config_yaml:
            return
        # Markdown needs the indentation kept: a code block.
        self.writer.add_text("config", "```yaml\n" + config_yaml + "\n```", global_step=0)
        config = yaml.safe_load(config_yaml) or {}
        config.pop("paths", None)
        self.hparams = flatten(config)

    def log_hparams(self, final_metrics: dict[str, float]) -> None:
        metrics = {f"hparam/{k}": v for k, v in final_metrics.items()}
        experiment, session_start, session_end = hparams(self.hparams, metrics)
        file_writer = self.writer._get_file_writer()
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)
        for name, value in metrics.items():
            self.writer.add_scalar(name, value)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, global_step=step)

    def log_image(self, tag: str, image, step: int) -> None:
        self.writer.add_image(tag, image, global_step=step, dataformats="HWC")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
