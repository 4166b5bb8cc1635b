"""What a person reads: the composed config as a tree at the start of a run, the summary table at its end.

rich renders both; it writes plain text (no colour codes) when the output is not a terminal. Torch-free.
"""

import io
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from rich import box
from rich.console import Console, Group
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from dlrun.atomic import replacing

log = logging.getLogger("dlrun")

# The groups in the order a reader wants them; any other top-level key follows, in the config's order.
TREE_ORDER = ("data", "model", "task", "optim", "sched", "trainer", "logger", "paths")
WIDTH = 110  # of config_tree.txt and of the summary in logs


def config_tree(cfg: DictConfig) -> Tree:
    """One branch per config group (its YAML, resolved), then one per top-level value."""
    tree = Tree("config", style="bold", guide_style="dim")
    keys = [k for k in TREE_ORDER if k in cfg] + [k for k in cfg if k not in TREE_ORDER and k != "hydra"]
    for key in keys:
        node = cfg._get_node(key)
        if isinstance(node, (DictConfig, ListConfig)):
            branch = tree.add(Text(key, style="bold cyan"))
            text = OmegaConf.to_yaml(node, resolve=True).rstrip() or "{}"
            branch.add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
        else:
            value = OmegaConf.to_yaml({key: OmegaConf.select(cfg, key)}).strip()
            tree.add(Text.assemble((key, "bold cyan"), value[len(key) :]))
    return tree


def render(renderable, color: bool = False, width: int = WIDTH) -> str:
    """A rich renderable as text (ANSI-coloured when `color`)."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=color, no_color=not color, highlight=False).print(
        renderable
    )
    return buffer.getvalue()


def print_config_tree(cfg: DictConfig, save_dir: str | Path | None = None, show: bool = True) -> None:
    """Print the config tree on stdout (coloured on a terminal, else as config_tree.txt holds it) and, with
    `save_dir`, save it as plain text in save_dir/config_tree.txt. `show=False`: save only."""
    tree = config_tree(cfg)
    if show and sys.stdout.isatty():
        Console(highlight=False).print(tree)
    elif show:
        sys.stdout.write(render(tree))
        sys.stdout.flush()
    if save_dir is not None:
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        with replacing(save_dir / "config_tree.txt") as tmp:
            tmp.write_text(render(tree))


def _num(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_table(result: dict, color: bool = False) -> str:
    """The end-of-run summary (the `result` dict Trainer.fit returns) as text: a headline, a table of the
    final and best train/val metrics, and where the outputs are."""
    best = result.get("best") or {}
    final = result.get("final") or {}
    monitor = result.get("monitor")
    headline = (
        f"{result['status']}: {result['epochs']} epochs, {result['global_step']} steps in "
        f"{result['wall_time_s']:.1f}s ({result['train_examples_per_s']:,.0f} train examples/s)"
    )
    metrics = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False)
    metrics.add_column("metric")
    metrics.add_column("final", justify="right")
    if best:
        metrics.add_column(f"best (epoch {best['epoch']})", justify="right")
    names = [k for k in final if k.startswith(("train/", "val/"))]
    names += [k for k in best if k.startswith(("train/", "val/")) and k not in names]
    for name in names:
        cells = [Text(name + (" *" if name == monitor else ""), style="bold" if name == monitor else "")]
        cells.append(_num(final[name]) if name in final else "")
        if best:
            cells.append(_num(best[name]) if name in best else "")
        metrics.add_row(*cells)
    where = Table.grid(padding=(0, 1))
    where.add_column(min_width=6)
    where.add_column()
    where.add_row(
        "params",
        f"{result['num_params']:,}   device {result['device']}   precision {result['precision']}",
    )
    if best and monitor:
        where.add_row("best", f"{monitor} {_num(best[monitor])} at epoch {best['epoch']}  (* the monitor)")
    where.add_row("run", f"{result['run_dir']}   (metrics.json, checkpoints, logger files)")
    rule = "─" * 64
    body = Group(
        Text(rule, style="dim"), Text(headline, style="bold"), metrics, where, Text(rule, style="dim")
    )
    text = render(body, color=color, width=max(WIDTH, len(str(result["run_dir"])) + 60))
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def print_summary(result: dict) -> None:
    """The summary table through the `dlrun` log: the console (stderr) and the run's dlrun.log."""
    for line in summary_table(result).splitlines():
        log.info(line)
