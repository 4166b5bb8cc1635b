"""Several loggers at once. Every conf/logger option is a `Loggers` node whose other keys are loggers, so
`logger=[tensorboard,csv]` merges two such nodes into one that holds both (lightning-hydra-template's way)."""

from pathlib import Path

from dlrun.loggers.base import NullLogger


class Loggers(NullLogger):
    """Calls every logger in turn. Each is a config node with a `_target_`, built here with `log_dir` (the
    run directory, which run.py passes per run: K-fold runs get one per fold)."""

    def __init__(self, log_dir: str | Path | None = None, **loggers):
        from hydra.utils import instantiate

        self.loggers = []
        try:
            for node in loggers.values():
                if node is not None:
                    self.loggers.append(instantiate(node, log_dir=log_dir))
        except BaseException:
            self.close()
            raise

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step)

    def log_config(self, config_yaml: str) -> None:
        for logger in self.loggers:
            logger.log_config(config_yaml)

    def log_hparams(self, final_metrics: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log_hparams(final_metrics)

    def log_text(self, tag: str, text: str, step: int) -> None:
        for logger in self.loggers:
            logger.log_text(tag, text, step)

    def log_image(self, tag: str, image, step: int) -> None:
        for logger in self.loggers:
            logger.log_image(tag, image, step)

    def close(self) -> None:
        """Closes every logger, even when one fails; then raises the first failure."""
        errors = []
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as err:  # noqa: BLE001 - re-raised below, after the others are closed
                errors.append(err)
        if errors:
            raise errors[0]
