"""The `dl-run` console script: a Hydra app over conf/.

Only Hydra is imported here, so `dl-run --help` and config errors answer without loading torch.
"""

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from dlrun import resolvers  # noqa: F401  (registers ${coalesce:}, ${minus:}, ${run_id:})

log = logging.getLogger("dlrun")


def config_dir() -> str:
    """The repository's conf/ when running from a source checkout (editable installs included),
    else the copy shipped inside the wheel."""
    here = Path(__file__).resolve().parent
    checkout = here.parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf" / "train.yaml").is_file():
        return str(checkout / "conf")
    return str(here / "conf")


def in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failed_job(cfg: DictConfig, err: Exception) -> None:
    """A sweep job that failed before its trainer wrote metrics.json (a bad value) still gets one, so that
    summary.csv lists it."""
    from dlrun.engine.summary import METRICS_FILE, RunSummary, failed, write_json

    path = Path(cfg.paths.output_dir) / METRICS_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        summary = RunSummary(status=failed(err), run_dir=str(path.parent))
        write_json(path, summary.to_dict())


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from dlrun.config_check import check_config
    from dlrun.engine.interrupts import StopRequested
    from dlrun.engine.ranks import env_rank
    from dlrun.errors import DlrunError, shorten

    try:
        check_config(cfg)  # a bad value stops here, before any data is loaded
        if env_rank() == 0:  # under torchrun: rank 0 alone
            from dlrun.console import print_config_tree

            print_config_tree(cfg, cfg.paths.output_dir, show=cfg.get("print_config", True))
        from dlrun.run import run

        return run(cfg)
    except DlrunError as err:
        log.error("error: %s", shorten(str(err), 600))
        if in_sweep():
            # A failing job (a diverging loss, a bad value) is one outcome of a sweep, not the end of it: the
            # other jobs go on, summary.csv shows its status, Optuna records the trial as failed (no value).
            record_failed_job(cfg, err)
            return None
        sys.exit(2)
    except StopRequested as stop:
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
