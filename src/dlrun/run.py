"""One run: build every part from the composed config, train, summarise."""

import logging
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dlrun import init_from
from dlrun.console import print_summary
from dlrun.engine.ranks import env_rank
from dlrun.engine.seed import seed_everything
from dlrun.engine.summary import METRICS_FILE, write_json
from dlrun.errors import DlrunError, first_line

log = logging.getLogger("dlrun")


def build(node: DictConfig, group: str, **kwargs):
    """instantiate() that reports a bad option as one line naming the group, not a nested traceback."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, DlrunError):
            raise cause from None
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        lines = [line for line in lines if not line.startswith("full_key:")]
        if cause is not None and str(cause).strip():
            lines.append(f"{type(cause).__name__}: {first_line(cause)}")
        raise DlrunError(f"{group}: {' '.join(dict.fromkeys(lines))}") from None


def model_node(cfg: DictConfig) -> dict:
    """The model's constructor arguments: `input_size` only tells data.resize what the model needs.
    What the data learns only when it is built (a text vocabulary's size) comes from `data.model_kwargs`."""
    node = OmegaConf.to_container(cfg.model, resolve=True)
    node.pop("input_size", None)
    return node


# Keys of the trainer group that the runner handles (they shape how many trainings run, not one of them).
RUNNER_KEYS = ("kfold", "kfold_refit")


def trainer_node(cfg: DictConfig) -> dict:
    node = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in RUNNER_KEYS:
        node.pop(key, None)
    return node


# The other modes: mode -> module with a run(cfg) (src/dlrun/modes/).
MODES = {
    "check": "dlrun.modes.check",
    "test": "dlrun.modes.test",
    "lr_find": "dlrun.modes.lr_find",
    "export": "dlrun.modes.export",
}


def run(cfg: DictConfig) -> float | None:
    if cfg.mode in ("predict", "translate"):  # translate: predict's name for task=seq2seq
        predict(cfg)
        return None
    if cfg.mode in MODES:
        import importlib

        importlib.import_module(MODES[cfg.mode]).run(cfg)
        return None
    if cfg.mode != "train":
        raise DlrunError(
            f"mode={cfg.mode!r} is unknown; use {', '.join(['train', 'predict', 'translate', *MODES])}"
        )
    run_dir = Path(cfg.paths.output_dir)
    if cfg.get("init_from"):  # a wrong path is said before any data is loaded
        init_from.resolve(cfg.init_from)
    seed_everything(cfg.seed)
    data = build(cfg.data, "data")
    if cfg.trainer.get("kfold"):
        return run_kfold(cfg, data, int(cfg.trainer.kfold), run_dir)
    result = train_one(cfg, data, run_dir)
    print_summary(result)
    return optimized_value(cfg, result["best"] or {})


def optimized_value(cfg: DictConfig, metrics: dict) -> float | None:
    """The value of `optimized_metric` the app returns to sweepers (None: no metric asked for)."""
    metric = cfg.get("optimized_metric")
    if not metric or not metrics:
        return None
    if metric not in metrics:
        logged = ", ".join(sorted(k for k in metrics if k.startswith(("train/", "val/"))))
        raise DlrunError(f"optimized_metric={metric!r} is not a logged metric; use one of: {logged}")
    return metrics[metric]


def train_one(cfg: DictConfig, data, run_dir: Path, label: str | None = None) -> dict:
    """Build a fresh model, task, optimizer, scheduler, logger and trainer, and train on `data`."""
    seed_everything(cfg.seed)
    trainer = build(trainer_node(cfg), "trainer", callbacks=build_callbacks(cfg))
    model = build(model_node(cfg), "model", **data.model_kwargs)
    if cfg.get("init_from"):
        init_from.load_into(model, cfg.init_from, cfg.get("init_skip"))
    task = build(cfg.task, "task")
    optimizer = build(cfg.optim, "optim")
    scheduler = build(cfg.sched.scheduler, "sched") if cfg.sched.scheduler is not None else None
    logger = None
    if not trainer.fast_dev_run and trainer.dist.is_main:  # under DDP only rank 0 logs
        logger = build(cfg.logger, "logger", **({"log_dir": str(run_dir)} if "log_dir" in cfg.logger else {}))
    log.info(
        "%s %s: model=%s data=%s on %s, precision %s, %s parameters",
        label or "run",
        cfg.name,
        cfg.model._target_.rsplit(".", 1)[-1],
        cfg.data._target_.rsplit(".", 1)[-1],
        trainer.device,
        trainer.precision.name,
        f"{sum(p.numel() for p in model.parameters()):,}",
    )
    log.info("outputs: %s", run_dir)
    return trainer.fit(
        model,
        task,
        data,
        optimizer,
        scheduler,
        cfg.sched.interval,
        logger,
        run_dir=run_dir,
        runs_root=run_dir.parent,
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        seed=cfg.seed,
        title=f"{cfg.name} {label or ''}".strip(),
    )


def build_callbacks(cfg: DictConfig) -> list:
    """The `callbacks` group: a mapping of name -> {_target_: ..., options}, each an engine Callback."""
    from dlrun.engine.callbacks import Callback

    built = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        callback = build(node, f"callbacks.{name}")
        if not isinstance(callback, Callback):
            raise DlrunError(
                f"callbacks.{name}: {type(callback).__name__} is not a dlrun.engine.callbacks.Callback"
            )
        built.append(callback)
    return built


def run_kfold(cfg: DictConfig, data, num_folds: int, run_dir: Path) -> float | None:
    """trainer.kfold=K: K trainings on seeded folds (fold_<k>/), their mean and std in metrics.json,
    summary.csv/png across folds, and with trainer.kfold_refit=true a final model on all data (refit/)."""
    from dlrun.callbacks import write_summary

    if cfg.trainer.get("resume"):
        raise DlrunError("trainer.resume is not supported with trainer.kfold; rerun the K-fold run")
    if not hasattr(data, "fold"):
        raise DlrunError(f"data {cfg.data._target_} cannot be split into folds (it has no fold())")
    folds = []
    for k in range(num_folds):
        result = train_one(
            cfg, data.fold(k, num_folds, cfg.seed), run_dir / f"fold_{k}", f"fold {k + 1}/{num_folds}"
        )
        folds.append(result)
    summary = kfold_summary(folds)
    if cfg.trainer.get("kfold_refit"):
        refit = train_one(cfg, data.refit(), run_dir / "refit", "refit on all folds")
        summary["refit"] = {k: refit[k] for k in ("run_dir", "final", "epochs")}
    summary["wall_time_s"] = sum(f["wall_time_s"] for f in folds)
    if env_rank() == 0:  # under DDP only rank 0 writes
        write_json(run_dir / METRICS_FILE, summary)
        write_summary(run_dir)
    for name in sorted(summary["mean"]):
        log.info(
            "%d-fold %s: mean %.4f, std %.4f", num_folds, name, summary["mean"][name], summary["std"][name]
        )
    log.info("outputs: %s (fold_*/, metrics.json, summary.csv, summary.png)", run_dir)
    return optimized_value(cfg, summary["mean"])


def kfold_summary(folds: list[dict]) -> dict:
    """Mean and (population) std over folds of every final train/val metric."""
    names = [k for k in folds[0]["final"] if k.startswith(("train/", "val/"))]
    mean, std = {}, {}
    for name in names:
        values = [f["final"][name] for f in folds]
        mean[name] = sum(values) / len(values)
        std[name] = (sum((v - mean[name]) ** 2 for v in values) / len(values)) ** 0.5
    return {
        "status": "completed" if all(f["status"] == "completed" for f in folds) else "incomplete",
        "kfold": len(folds),
        "monitor": folds[0]["monitor"],
        "mean": mean,
        "std": std,
        "num_params": folds[0]["num_params"],
        "folds": [{k: f[k] for k in ("run_dir", "epochs", "final", "best", "wall_time_s")} for f in folds],
    }


def checkpoints_for_prediction(path: Path) -> list[Path]:
    """A .ckpt file; a run dir's best.ckpt; a K-fold run's refit model, else every fold's best.ckpt."""
    from dlrun.engine.checkpoint import BEST, LAST

    if path.is_file():
        return [path]
    if (path / BEST).is_file():
        return [path / BEST]
    if (path / "refit" / LAST).is_file():
        return [path / "refit" / LAST]
    folds = sorted(path.glob(f"fold_*/{BEST}"))
    if folds:
        return folds
    raise DlrunError(f"ckpt_path={path}: no .ckpt file, best.ckpt, refit/ or fold_*/best.ckpt there")


def predict(cfg: DictConfig) -> None:
    """mode=predict: load ckpt_path's weights into the configured model and let the task predict."""
    from dlrun.engine.device import select_device
    from dlrun.modes.common import checkpoint_model, checkpoint_paths

    checkpoint_paths(cfg)
    task = build(cfg.task, "task")
    if not hasattr(task, "predict"):
        raise DlrunError(f"task {cfg.task._target_} has no predict mode")
    seed_everything(cfg.seed)
    device = select_device(cfg.trainer.device)
    data = build(cfg.data, "data")
    data.setup(device, cfg.seed)
    model, paths = checkpoint_model(cfg, data, device)
    log.info("predicting with %s", ", ".join(str(p) for p in paths))
    task.predict(model, data, Path(cfg.paths.output_dir))


def check_data_state(data, saved: dict | None, path: Path) -> None:
    """The data config must rebuild what the checkpoint was trained with (a vocabulary): the same sizes with
    other tokens would load without error and predict nonsense."""
    now_state = data.checkpoint_state()
    if saved is None or now_state is None:
        return
    for name, now in now_state.items():
        if name in saved and saved[name] != now:
            raise DlrunError(
                f"{path} was trained with another {name} ({len(saved[name])} tokens; the data config now "
                f"builds {len(now)}); use the data options of the run that wrote it (its .hydra/config.yaml)"
            )
