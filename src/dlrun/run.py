"""One run: build every part from the composed config, train, summarise."""

import logging
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dlrun.engine.seed import seed_everything
from dlrun.errors import DlrunError

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
            lines.append(f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}")
        raise DlrunError(f"{group}: {' '.join(dict.fromkeys(lines))}") from None


def model_node(cfg: DictConfig) -> dict:
    """The model's constructor arguments: `input_size` only tells data.resize what the model needs."""
    node = OmegaConf.to_container(cfg.model, resolve=True)
    node.pop("input_size", None)
    return node


def run(cfg: DictConfig) -> float | None:
    run_dir = Path(cfg.paths.output_dir)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    seed_everything(cfg.seed)

    trainer = build(cfg.trainer, "trainer")
    data = build(cfg.data, "data")
    model = build(model_node(cfg), "model")
    task = build(cfg.task, "task")
    optimizer = build(cfg.optim, "optim")
    scheduler = build(cfg.sched.scheduler, "sched") if cfg.sched.scheduler is not None else None
    logger = None if trainer.fast_dev_run else build(cfg.logger, "logger")

    log.info(
        "run %s: model=%s data=%s on %s, precision %s, %s parameters",
        cfg.name,
        cfg.model._target_.rsplit(".", 1)[-1],
        cfg.data._target_.rsplit(".", 1)[-1],
        trainer.device,
        trainer.precision.name,
        f"{sum(p.numel() for p in model.parameters()):,}",
    )
    log.info("outputs: %s", run_dir)
    result = trainer.fit(
        model,
        task,
        data,
        optimizer,
        scheduler,
        cfg.sched.interval,
        logger,
        run_dir=run_dir,
        runs_root=run_dir.parent,
        config_yaml=config_yaml,
        seed=cfg.seed,
    )
    print_summary(result)
    best = result["best"] or {}
    metric = cfg.get("optimized_metric")
    return best.get(metric) if metric else None


def print_summary(result: dict) -> None:
    best = result["best"] or {}
    final = result["final"]
    val = "  ".join(f"{k} {v:.4f}" for k, v in final.items() if k.startswith("val/"))
    lines = [
        "─" * 64,
        f"{result['status']}: {result['epochs']} epochs, {result['global_step']} steps in "
        f"{result['wall_time_s']:.1f}s ({result['train_examples_per_s']:,.0f} train examples/s)",
        f"final  {val}",
    ]
    if best:
        lines.append(f"best   {result['monitor']} {best[result['monitor']]:.4f} at epoch {best['epoch']}")
    lines += [
        f"params {result['num_params']:,}   device {result['device']}   precision {result['precision']}",
        f"run    {result['run_dir']}   (metrics.json, checkpoints, TensorBoard events)",
        "─" * 64,
    ]
    for line in lines:
        log.info(line)
