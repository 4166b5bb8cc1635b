"""Run the book's experiments at the book's settings, then compare them with the book (dl-report).

    python scripts/run_book.py --list                         # what it would run, one dl-run command a line
    DLRUN_DATA_DIR=~/datasets python scripts/run_book.py      # every d2l/* experiment, then the report
    python scripts/run_book.py lenet resnet18 --write docs/results.md     # some of them; update the doc
    python scripts/run_book.py --edition en                   # the 1.0 edition (d2l_en/*)

Each experiment runs with `data.on_device=true` where its data module has the option (in-memory tensors)
and, on CUDA, with `trainer.precision=bf16-mixed` for the convolutional networks, whose accuracies do not
depend on float32; the language models, translation and regression runs stay in float32 (perplexities near
1 and losses near 1e-5 are what the book prints). Runs go to <out>/<name>/<time>/, the report to stdout,
<out>/report.md and, with --write, between the dl-report markers of a Markdown file.
"""

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
MIXED_PRECISION = {"alexnet", "vgg", "nin", "googlenet", "resnet18", "densenet"}


def experiments(edition: str) -> list[str]:
    folder = "d2l" if edition == "v2" else "d2l_en"
    return sorted(p.stem for p in (CONF / "experiment" / folder).glob("*.yaml"))


def has_on_device(experiment: str) -> bool:
    from hydra import compose, initialize_config_dir

    import dlrun.resolvers  # noqa: F401  (the resolvers the configs use)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    return "on_device" in cfg.data


def command(experiment: str, name: str, cuda: bool, out: Path, extra: list[str]) -> list[str]:
    args = [f"experiment={experiment}", f"paths.output_root={out}"]
    if has_on_device(experiment):
        args.append("data.on_device=true")
    if cuda and name in MIXED_PRECISION:
        args.append("trainer.precision=bf16-mixed")
    return [sys.executable, "-m", "dlrun", *args, *extra]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="experiments to run (default: all of the edition)")
    parser.add_argument("--edition", choices=("v2", "en"), default="v2")
    parser.add_argument("--list", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--out", type=Path, default=Path("outputs/book"), help="output root of the runs")
    parser.add_argument("--cuda", action=argparse.BooleanOptionalAction, default=None,
                        help="use mixed precision (default: when torch sees a GPU)")  # fmt: skip
    parser.add_argument("--tolerance", default="0.05", help="passed to dl-report")
    parser.add_argument("--write", type=Path, help="also put the report into this Markdown file (markers)")
    parser.add_argument("--override", action="append", default=[], help="an extra dl-run override")
    args = parser.parse_args()

    names = args.names or experiments(args.edition)
    unknown = sorted(set(names) - set(experiments(args.edition)))
    if unknown:
        parser.error(f"unknown {args.edition} experiments: {', '.join(unknown)}")
    if args.cuda is None:
        import torch

        args.cuda = torch.cuda.is_available()
    folder = "d2l" if args.edition == "v2" else "d2l_en"
    commands = [command(f"{folder}/{n}", n, args.cuda, args.out, args.override) for n in names]
    if args.list:
        for cmd in commands:
            print("dl-run " + shlex.join(cmd[3:]))
        return 0
    failed = []
    for name, cmd in zip(names, commands, strict=True):
        print(f"==> {name}: dl-run {shlex.join(cmd[3:])}", flush=True)
        if subprocess.run(cmd, cwd=Path.cwd()).returncode != 0:
            failed.append(name)  # dl-report shows it as unfinished or without metrics; go on
    from dlrun.report import main as report

    report_args = [str(args.out), "--tolerance", args.tolerance]
    report([*report_args, "--write", str(args.out / "report.md")])
    if args.write:
        report([*report_args, "--write", str(args.write)])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
