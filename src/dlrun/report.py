"""dl-report: the book's figures next to what dlrun measured, one Markdown row per run.

    dl-report outputs/                                   # every run under outputs/ (searched recursively)
    dl-report multirun/d2l_lenet/<sweep> --tolerance 0.02 --csv runs.csv
    dl-report outputs/ --write docs/results.md           # the table between the dl-report markers

A run is a directory holding metrics.json or .hydra/. The book's figures come from the `book:` block of the
run's .hydra/config.yaml; dlrun's from metrics.json: the last epoch's value (final) and the best epoch's for
that metric (best: highest accuracy/BLEU, lowest loss/perplexity; for K-fold runs the mean over the folds).
A final figure further from the book's than --tolerance times the book's figure is marked, as is a run that
did not complete. Runs without metrics.json, with an unreadable one, or without a `book:` block get a row
that says so.
"""

import argparse
import csv
import json
import math
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from dlrun.engine.summary import METRICS_FILE
from dlrun.errors import DlrunError
from dlrun.markers import write_between

BEGIN, END = "<!-- dl-report:begin -->", "<!-- dl-report:end -->"
EDITIONS = ("v2", "en")
HIGHER_IS_BETTER = ("acc", "bleu")


def book_problem(book) -> str | None:
    """What is wrong with a `book:` block, or None. Metrics map a name to a number, a [low, high] pair, or
    null (a figure the v2 block has that the 1.0 edition does not report); `printed: false` with a `note`
    stands for a section that prints no figure."""
    if not isinstance(book, dict):
        return "book: is not a mapping"
    if book.get("edition") not in EDITIONS:
        return f"book.edition={book.get('edition')!r}; use one of {', '.join(EDITIONS)}"
    if not isinstance(book.get("section"), str) or not book["section"]:
        return "book.section must be a string such as '6.6'"
    metrics = book.get("metrics")
    if not isinstance(metrics, dict):
        return "book.metrics must be a mapping of metric name to figure"
    for name, value in metrics.items():
        if value is not None and figure_range(value) is None:
            return f"book.metrics.{name}={value!r}; use a number or [low, high]"
    if not any(v is not None for v in metrics.values()) and not (
        book.get("printed") is False and book.get("note")
    ):
        return "book.metrics is empty; give the book's figures, or printed: false and a note"
    return None


def figure_range(value) -> tuple[float, float] | None:
    """(low, high) of a book figure: a number is its own range."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value), float(value)
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and value[0] <= value[1]
    ):
        return float(value[0]), float(value[1])
    return None


@dataclass
class MetricRow:
    name: str
    book: tuple[float, float]
    final: float | None
    best: float | None
    diff: float | None  # final minus the nearest end of the book's range; 0 inside it
    off: bool


@dataclass
class Run:
    run_dir: Path
    experiment: str = "?"
    edition: str = ""
    section: str = ""
    note: str = ""
    status: str | None = None
    epochs: int | None = None
    max_epochs: int | None = None
    wall_time_s: float | None = None
    device: str | None = None
    precision: str | None = None
    num_params: int | None = None
    command: str = ""
    problems: list[str] = field(default_factory=list)
    metrics: list[MetricRow] = field(default_factory=list)


# ------------------------------------------------------------------ reading runs
def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories at or under `paths`; a run's own subfolders (K-fold folds, refit) are not runs."""
    runs = []
    for path in paths:
        if not path.is_dir():
            raise DlrunError(f"{path}: no such directory; give run directories or folders of them")
        for root, dirs, files in os.walk(path):
            if METRICS_FILE in files or ".hydra" in dirs:
                runs.append(Path(root))
                dirs.clear()
            else:
                dirs.sort()
    return sorted(dict.fromkeys(runs))


def read_metrics(path: Path) -> tuple[dict | None, str | None]:
    if not path.is_file():
        return None, "no metrics.json (the run never finished an epoch, or it is not a dlrun run)"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"metrics.json unreadable ({type(err).__name__}: {err})"
    if not isinstance(data, dict):
        return None, f"metrics.json holds a JSON {type(data).__name__}, not an object"
    return data, None


def read_run(run_dir: Path, tolerance: float) -> Run:
    run = Run(run_dir)
    hydra = run_dir / ".hydra"
    cfg, overrides = {}, []
    try:
        if (hydra / "config.yaml").is_file():
            cfg = OmegaConf.to_container(OmegaConf.load(hydra / "config.yaml"), resolve=False) or {}
        if (hydra / "overrides.yaml").is_file():
            overrides = [str(o) for o in OmegaConf.to_container(OmegaConf.load(hydra / "overrides.yaml"))]
    except Exception as err:  # a hand-edited or truncated YAML file: report it, keep going
        run.problems.append(f".hydra unreadable ({type(err).__name__})")
    if not isinstance(cfg, dict):
        cfg = {}
    experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), None)
    run.experiment = experiment or str(cfg.get("name") or run_dir.name)
    run.command = "dl-run " + " ".join(shlex.quote(o) for o in overrides) if hydra.is_dir() else ""
    trainer = cfg.get("trainer") if isinstance(cfg.get("trainer"), dict) else {}
    run.max_epochs = trainer.get("max_epochs") if isinstance(trainer.get("max_epochs"), int) else None

    metrics, problem = read_metrics(run_dir / METRICS_FILE)
    if problem:
        run.problems.append(problem)
    else:
        fill_from_metrics(run, metrics)

    book = cfg.get("book")
    if book is None:
        run.problems.append("no book: block in .hydra/config.yaml" if cfg else "no .hydra/config.yaml")
        return run
    problem = book_problem(book)
    if problem:
        run.problems.append(problem)
        return run
    run.edition, run.section, run.note = book["edition"], book["section"], str(book.get("note") or "")
    if metrics is not None:
        final = metrics.get("mean") if "kfold" in metrics else metrics.get("final")
        final = final if isinstance(final, dict) else {}
        history = metrics.get("history") if isinstance(metrics.get("history"), list) else []
        for name, value in book["metrics"].items():
            if value is not None:
                run.metrics.append(compare(name, figure_range(value), final, history, metrics, tolerance))
    return run


def fill_from_metrics(run: Run, metrics: dict) -> None:
    run.status = metrics.get("status")
    run.wall_time_s = metrics.get("wall_time_s")
    run.num_params = metrics.get("num_params")
    run.epochs = metrics.get("epochs")
    run.device, run.precision = metrics.get("device"), metrics.get("precision")
    folds = metrics.get("folds")
    if "kfold" in metrics and isinstance(folds, list) and folds:  # K-fold: the folds' own metrics.json
        run.epochs = folds[0].get("epochs")
        first, _ = read_metrics(Path(str(folds[0].get("run_dir", ""))) / METRICS_FILE)
        first = first or read_metrics(run.run_dir / "fold_0" / METRICS_FILE)[0] or {}
        run.device, run.precision = first.get("device"), first.get("precision")
        run.epochs = f"{run.epochs} × {metrics['kfold']} folds"


def compare(name, book, final, history, metrics, tolerance) -> MetricRow:
    value = _number(final.get(name))
    values = [v for v in (_number(h.get(name)) for h in history if isinstance(h, dict)) if v is not None]
    higher = name.rsplit("/", 1)[-1] in HIGHER_IS_BETTER
    if values:
        best = max(values) if higher else min(values)
    else:
        best_epoch = metrics.get("best") if isinstance(metrics.get("best"), dict) else {}
        best = _number(best_epoch.get(name))
    low, high = book
    diff = None if value is None else (value - low if value < low else value - high if value > high else 0.0)
    scale = max(abs(low), abs(high))
    off = diff is not None and abs(diff) > tolerance * scale
    return MetricRow(name, book, value, best, diff, off)


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# ------------------------------------------------------------------ writing
def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def fmt_book(low: float, high: float) -> str:
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def fmt_diff(m: MetricRow) -> str:
    if m.diff is None:
        return "—"
    return "0 (in range)" if m.diff == 0 and m.book[0] != m.book[1] else f"{m.diff:+.3g}"


def fmt_time(seconds) -> str:
    if not isinstance(seconds, int | float):
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def flags(run: Run, tolerance: float) -> list[str]:
    out = list(run.problems)
    if run.status is not None and run.status != "completed":
        out.append(f"**not finished**: {run.status}")
    missing = [m.name for m in run.metrics if m.final is None]
    if missing:
        out.append(f"metrics.json has no final {', '.join(missing)}")
    off = [m.name for m in run.metrics if m.off]
    if off:
        out.append(f"**off** by more than {tolerance:.0%}: {', '.join(off)}")
    if run.metrics and not off and not out:
        out.append("within tolerance")
    if not run.metrics and not run.problems and run.note:
        out.append(f"book: {run.note}")
    return out


def markdown(runs: list[Run], tolerance: float) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| experiment | edition § | metric | book | dlrun final | dlrun best | Δ final | check | epochs "
        "| wall | device, precision | params | command |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        ms = run.metrics
        epochs = "—" if run.epochs is None else str(run.epochs)
        if run.max_epochs is not None and isinstance(run.epochs, int) and run.epochs != run.max_epochs:
            epochs = f"{run.epochs}/{run.max_epochs}"
        row = [
            f"`{run.experiment}`",
            f"{run.edition} §{run.section}" if run.edition else "—",
            "<br>".join(m.name for m in ms) or "—",
            "<br>".join(fmt_book(*m.book) for m in ms) or "—",
            "<br>".join(fmt(m.final) for m in ms) or "—",
            "<br>".join(fmt(m.best) for m in ms) or "—",
            "<br>".join(fmt_diff(m) for m in ms) or "—",
            "; ".join(flags(run, tolerance)) or "—",
            epochs,
            fmt_time(run.wall_time_s),
            ", ".join(str(x) for x in (run.device, run.precision) if x) or "—",
            f"{run.num_params:,}" if isinstance(run.num_params, int) else "—",
            f"`{run.command}`" if run.command else "—",
        ]
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


CSV_FIELDS = [
    "run_dir", "experiment", "edition", "section", "metric", "book_low", "book_high", "final", "best", "diff",
    "off", "status", "epochs", "max_epochs", "wall_time_s", "device", "precision", "num_params", "command",
    "problems",
]  # fmt: skip


def write_csv(runs: list[Run], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for run in runs:
            base = {
                "run_dir": str(run.run_dir), "experiment": run.experiment, "edition": run.edition,
                "section": run.section, "status": run.status, "epochs": run.epochs,
                "max_epochs": run.max_epochs, "wall_time_s": run.wall_time_s, "device": run.device,
                "precision": run.precision, "num_params": run.num_params, "command": run.command,
                "problems": "; ".join(run.problems),
            }  # fmt: skip
            for m in run.metrics or [None]:
                extra = {} if m is None else {
                    "metric": m.name, "book_low": m.book[0], "book_high": m.book[1], "final": m.final,
                    "best": m.best, "diff": m.diff, "off": m.off,
                }  # fmt: skip
                writer.writerow(base | extra)


def report(paths: list[Path], tolerance: float) -> list[Run]:
    if tolerance < 0:
        raise DlrunError(f"--tolerance {tolerance}: give a fraction >= 0, e.g. 0.05 for 5%")
    runs = [read_run(d, tolerance) for d in find_runs(paths)]
    if not runs:
        raise DlrunError(f"no run directories (metrics.json or .hydra/) under {', '.join(map(str, paths))}")
    return sorted(runs, key=lambda r: (r.experiment, str(r.run_dir)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dl-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("outputs")], help="run dirs or folders")
    parser.add_argument(
        "--tolerance", type=float, default=0.05,
        help="mark a final figure further than this fraction of the book's from it (default 0.05)",
    )  # fmt: skip
    parser.add_argument("--csv", type=Path, help="also write one CSV row per run and metric here")
    parser.add_argument(
        "--write", type=Path, help=f"put the table between {BEGIN} and {END} in this Markdown file"
    )
    args = parser.parse_args(argv)
    try:
        runs = report(args.paths, args.tolerance)
    except DlrunError as err:
        print(f"dl-report: {err}", file=sys.stderr)
        return 2
    table = markdown(runs, args.tolerance)
    sys.stdout.write(table)
    if args.csv:
        write_csv(runs, args.csv)
    if args.write:
        command = " ".join(["dl-report", *sys.argv[1:]] if argv is None else ["dl-report", *argv])
        write_between(args.write, BEGIN, END, f"Generated by `{command}`.\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
