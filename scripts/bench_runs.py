"""Whole runs, timed as a user waits for them: `dl-run` as typed against a plain PyTorch loop, same run.

    DLRUN_DATA_DIR=../shared/data python scripts/bench_runs.py             # both rows -> docs/performance.md
    DLRUN_DATA_DIR=../shared/data python scripts/bench_runs.py --rows gru  # one row
    python scripts/bench_runs.py --bare-gru --threads 1                     # one bare run, JSON on stdout

Rows:
- **gru**: `dl-run experiment=d2l/gru` (the book's v2 settings: nn.GRU 256, first 10,000 characters of The
  Time Machine, batch 32 × 35 steps, sequential partitioning, SGD lr 1, clipping at norm 1, 500 epochs)
  against the book's loop written plainly (one-hot nn.GRU, `clip_grad_norm_`, no validation, no files), with
  torch's default thread count and with one thread. Each is a whole process, imports included; the runs
  alternate so that drift in the machine's speed hits both. Reported: wall time, the final training
  perplexity and the first epoch under 1.1.
- **lenet_fast**: `dl-run experiment=d2l/lenet` with its defaults and with `trainer=fast`: the second
  epoch's time (so compilation, in the first, is not in it) and the final validation accuracy.
"""

import argparse
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bench_runs.py: begin -->", "<!-- bench_runs.py: end -->"


def bare_gru(threads: int | None, epochs: int = 500) -> dict:
    """The book's train_ch8 for nn.GRU at the v2 settings, as a user would write it."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    root = Path(os.environ.get("DLRUN_DATA_DIR", "data"))
    text = re.sub("[^A-Za-z]+", " ", (root / "timemachine.txt").read_text()).strip().lower()[:10000]
    chars = sorted(set(text))
    corpus = torch.tensor([chars.index(c) for c in text])
    vocab, batch, steps = len(chars), 32, 35
    torch.manual_seed(0)
    random.seed(0)
    rnn, head = nn.GRU(vocab, 256), nn.Linear(256, vocab)
    params = [*rnn.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=1)
    ppl = []
    for _ in range(epochs):
        offset = random.randint(0, steps)  # the book's seq_data_iter_sequential
        n = (len(corpus) - offset - 1) // batch * batch
        xs = corpus[offset : offset + n].reshape(batch, -1)
        ys = corpus[offset + 1 : offset + 1 + n].reshape(batch, -1)
        state, loss_sum, tokens = None, 0.0, 0
        for i in range(0, xs.shape[1] // steps * steps, steps):
            x, y = xs[:, i : i + steps], ys[:, i : i + steps]
            out, state = rnn(F.one_hot(x.T, vocab).float(), state)
            state = state.detach()
            loss = F.cross_entropy(head(out).reshape(-1, vocab), y.T.reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1)
            opt.step()
            loss_sum += loss.item() * y.numel()  # the book's Accumulator
            tokens += y.numel()
        ppl.append(math.exp(loss_sum / tokens))
    return {"ppl": ppl, "train_s": time.perf_counter() - start, "threads": torch.get_num_threads()}


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, proc


def dl_run(overrides: list[str], run_dir: Path) -> tuple[float, dict]:
    dl = str(Path(sys.executable).with_name("dl-run"))
    wall, _ = timed([dl, *overrides, f"hydra.run.dir={run_dir}"])  # as typed, in a run dir of ours
    return wall, json.loads((run_dir / "metrics.json").read_text())


def first_below(ppl: list[float], bound: float) -> int | None:
    return next((epoch for epoch, p in enumerate(ppl, 1) if p < bound), None)


def gru_rows(repeats: int, one_thread: bool) -> list[dict]:
    rows = []
    variants = ["bare", "bare_1thread", "dlrun"] if one_thread else ["bare", "dlrun"]
    for repeat in range(repeats):
        for variant in variants[repeat % len(variants) :] + variants[: repeat % len(variants)]:
            if variant == "dlrun":
                with tempfile.TemporaryDirectory() as tmp:
                    wall, summary = dl_run(["experiment=d2l/gru"], Path(tmp) / "run")
                ppl = [h["train/ppl"] for h in summary["history"]]
                threads = summary.get("threads", "default")
            else:
                threads = ["--threads", "1"] if variant == "bare_1thread" else []
                wall, proc = timed([sys.executable, __file__, "--bare-gru", *threads])
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                ppl, threads = result["ppl"], result["threads"]
            row = {"row": "gru", "variant": variant, "wall_s": wall, "final_ppl": ppl[-1], "threads": threads}
            rows.append(row | {"epoch_ppl_below_1.1": first_below(ppl, 1.1), "epochs": len(ppl)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def lenet_rows(repeats: int) -> list[dict]:
    rows = []
    variants = {"defaults": [], "trainer=fast": ["trainer=fast"]}
    for repeat in range(repeats):
        order = list(variants) if repeat % 2 == 0 else list(variants)[::-1]
        for variant in order:
            with tempfile.TemporaryDirectory() as tmp:
                wall, summary = dl_run(["experiment=d2l/lenet", *variants[variant]], Path(tmp) / "run")
            history = summary["history"]
            rows.append(
                {
                    "row": "lenet_fast",
                    "variant": variant,
                    "wall_s": wall,
                    "epoch1_s": history[0]["time/epoch_s"],
                    "epoch2_s": history[1]["time/epoch_s"],
                    "epoch2_examples_per_s": history[1]["throughput/train_examples_per_s"],
                    "final_val_acc": summary["final"]["val/acc"],
                    "precision": summary["precision"],
                    "compile": summary["compile"],
                    "channels_last": summary["channels_last"],
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def markdown(rows: list[dict], command: str) -> str:
    import torch

    lines = [
        f"Measured with `{command}` on {platform.machine()}, {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__}, no GPU.",
    ]
    gru = [r for r in rows if r["row"] == "gru"]
    if gru:
        bares = {r["variant"] for r in gru} - {"dlrun"}
        bare = min(median([r["wall_s"] for r in gru if r["variant"] == v]) for v in bares)
        lines += [
            "",
            "**The book's GRU, 500 epochs, whole processes** (bare: the book's loop written plainly):",
            "",
            "| loop | threads | wall (s), median | runs | × the faster bare loop's speed | final train ppl "
            "| first epoch with ppl < 1.1 |",
            "|---|---|---|---|---|---|---|",
        ]
        for variant in (*sorted(bares), "dlrun"):
            runs = [r for r in gru if r["variant"] == variant]
            wall = median([r["wall_s"] for r in runs])
            label = "`dl-run experiment=d2l/gru`" if variant == "dlrun" else variant.replace("_", ", ")
            lines.append(
                f"| {label} | {runs[0]['threads']} | {wall:.1f} | {len(runs)} | {bare / wall:.2f} | "
                f"{median([r['final_ppl'] for r in runs]):.3f} | "
                f"{median([r['epoch_ppl_below_1.1'] or 10**9 for r in runs])} |"
            )
    lenet = [r for r in rows if r["row"] == "lenet_fast"]
    if lenet:
        base = median([r["epoch2_s"] for r in lenet if r["variant"] == "defaults"])
        lines += [
            "",
            "**`trainer=fast` on the book's LeNet** (`dl-run experiment=d2l/lenet`, 10 epochs):",
            "",
            "| trainer | chose | epoch 2 (s), median | × defaults | epoch 1 (s) | final val/acc | runs |",
            "|---|---|---|---|---|---|---|",
        ]
        for variant in ("defaults", "trainer=fast"):
            runs = [r for r in lenet if r["variant"] == variant]
            first = runs[0]
            chose = (
                f"{first['precision']}, compile {first['compile']}, channels_last {first['channels_last']}"
            )
            epoch2 = median([r["epoch2_s"] for r in runs])
            accuracies = ", ".join(f"{r['final_val_acc']:.4f}" for r in runs)
            lines.append(
                f"| {variant} | {chose} | {epoch2:.2f} | {base / epoch2:.2f} | "
                f"{median([r['epoch1_s'] for r in runs]):.1f} | "
                f"{accuracies} | {len(runs)} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", nargs="+", default=["gru", "lenet_fast"], choices=["gru", "lenet_fast"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--one-thread", action="store_true", help="also a bare GRU loop on one thread")
    parser.add_argument("--bare-gru", action="store_true", help="one bare GRU run; JSON on stdout")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=500, help="of the bare GRU run")
    parser.add_argument("--json", help="also write every measurement here")
    parser.add_argument("--write", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args()
    if args.bare_gru:
        print(json.dumps(bare_gru(args.threads, args.epochs)))
        return
    rows = []
    if "gru" in args.rows:
        rows += gru_rows(args.repeats, args.one_thread)
    if "lenet_fast" in args.rows:
        rows += lenet_rows(args.repeats)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    from dlrun.markers import write_between

    command = "python scripts/bench_runs.py " + " ".join(sys.argv[1:])
    write_between(args.write, BEGIN, END, markdown(rows, command.strip()))
    print(markdown(rows, command.strip()))


if __name__ == "__main__":
    main()
