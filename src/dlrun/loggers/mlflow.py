"""MLflow: the flattened config as params, metrics per epoch and per step, and at close the run's curves.png,
config and metrics.json as artifacts. Needs `pip install "dlrun[mlflow]"`."""

import os
import time
from pathlib import Path

import yaml

from dlrun.engine.summary import METRICS_FILE
from dlrun.errors import DlrunError
from dlrun.loggers.base import NullLogger, flatten

ARTIFACTS = ("curves.png", METRICS_FILE, "config_tree.txt")
BATCH = 100  # MLflow's limit of params per log_batch call


def sweep_tags() -> dict[str, str]:
    """In a Hydra multirun: the sweep directory and job number, which group a sweep's runs in MLflow."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    hydra = HydraConfig.get()
    return {"sweep": str(Path(hydra.sweep.dir).resolve()), "sweep_job": str(hydra.job.num)}


class MLflowLogger(NullLogger):
    def __init__(
        self,
        log_dir: str | Path | None = None,
        tracking_uri: str | None = None,
        experiment_name: str = "dlrun",
        run_name: str | None = None,
        tags: dict | None = None,
    ):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise DlrunError('logger=mlflow needs MLflow: pip install "dlrun[mlflow]"') from None
        if tracking_uri is None or "://" not in tracking_uri:
            # A folder: MLflow's file store (./mlruns by default), which MLflow 3 accepts only on request.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            tracking_uri = Path(tracking_uri or "mlruns").resolve().as_uri()
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.client = MlflowClient(tracking_uri=tracking_uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(experiment_name)
            except Exception:  # noqa: BLE001 - another job of a parallel sweep created it first
                experiment_id = self.client.get_experiment_by_name(experiment_name).experiment_id
        else:
            experiment_id = experiment.experiment_id
        tags = {str(k): str(v) for k, v in (tags or {}).items()} | sweep_tags()
        if self.log_dir is not None:
            tags["run_dir"] = str(self.log_dir.resolve())
        default_name = f"job {tags['sweep_job']}" if "sweep_job" in tags else None
        if self.log_dir is not None and default_name is None:
            default_name = self.log_dir.name
        run = self.client.create_run(experiment_id, run_name=run_name or default_name, tags=tags)
        self.run_id = run.info.run_id
        self.config_yaml = ""
        self.completed = False

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_config(self, config_yaml: str) -> None:
        from mlflow.entities import Param

        if not config_yaml:
            return
        self.config_yaml = config_yaml
        config = yaml.safe_load(config_yaml) or {}
        config.pop("paths", None)
        params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
        for i in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + BATCH])

    def log_hparams(self, final_metrics: dict[str, float]) -> None:
        """Called when the run completed: the final (and best/) metrics under final/."""
        self.completed = True
        names = {k: (k if k.startswith("best/") else f"final/{k}") for k in final_metrics}
        self.log_metrics({names[k]: v for k, v in final_metrics.items()}, step=0)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.client.log_text(self.run_id, text, f"text/{tag}/{step}.txt")

    def log_image(self, tag: str, image, step: int) -> None:
        self.client.log_image(self.run_id, image, artifact_file=f"images/{tag}/{step}.png")

    def close(self) -> None:
        if self.config_yaml:
            self.client.log_text(self.run_id, self.config_yaml, "config.yaml")
        if self.log_dir is not None:
            for name in ARTIFACTS:
                if (self.log_dir / name).is_file():
                    self.client.log_artifact(self.run_id, str(self.log_dir / name))
        self.client.set_terminated(self.run_id, "FINISHED" if self.completed else "FAILED")
