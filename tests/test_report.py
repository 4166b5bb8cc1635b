"""dl-report on run directories the tests write themselves, and on one real run."""

import csv
import json
from pathlib import Path

import pytest
from conftest import run_cli
from omegaconf import OmegaConf

from dlrun.markers import write_between
from dlrun.report import BEGIN, END, main

BOOK = {"edition": "v2", "section": "6.6", "metrics": {"train/loss": 0.469, "val/acc": [0.776, 0.779]}}


def history(*val_accs, loss=0.47):
    return [
        {"epoch": i + 1, "train/loss": loss + 0.1 * (len(val_accs) - i - 1), "val/acc": a}
        for i, a in enumerate(val_accs)
    ]


def fake_run(path: Path, metrics=None, book=BOOK, overrides=("experiment=d2l/lenet",), max_epochs=3) -> Path:
    """A run dir as dl-run leaves it: .hydra/config.yaml + overrides.yaml, metrics.json (a dict is dumped as
    JSON, a str written as is, None: no file)."""
    (path / ".hydra").mkdir(parents=True)
    cfg = {"name": "d2l_lenet", "trainer": {"max_epochs": max_epochs}} | ({"book": book} if book else {})
    OmegaConf.save(OmegaConf.create(cfg), path / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), path / ".hydra" / "overrides.yaml")
    if isinstance(metrics, dict):
        hist = metrics.get("history", [])
        metrics = {
            "status": "completed",
            "epochs": len(hist),
            "global_step": 10 * len(hist),
            "monitor": "val/acc",
            "best": max(hist, key=lambda h: h.get("val/acc", 0)) if hist else {},
            "final": hist[-1] if hist else {},
            "num_params": 61706,
            "wall_time_s": 59.5,
            "train_examples_per_s": 1000.0,
            "device": "cuda:0",
            "precision": "bf16-mixed",
            "run_dir": str(path),
        } | metrics
        metrics = json.dumps(metrics)
    if metrics is not None:
        (path / "metrics.json").write_text(metrics)
    return path


def rows(capsys, *args) -> dict[str, str]:
    """dl-report's Markdown rows keyed by their run dir's name (from the command column)."""
    assert main([str(a) for a in args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| experiment |") and lines[1].startswith("|---")
    return lines[2:]


def test_a_run_next_to_the_book(tmp_path, capsys):
    fake_run(
        tmp_path / "a",
        {"history": history(0.70, 0.779, 0.777)},
        overrides=["experiment=d2l/lenet", "optim.lr=0.5"],
    )
    [row] = rows(capsys, tmp_path)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "`d2l/lenet`" and cells[1] == "v2 §6.6"
    assert cells[2] == "train/loss<br>val/acc"
    assert cells[3] == "0.469<br>0.776–0.779"
    assert cells[4] == "0.47<br>0.777"  # final: the last epoch
    assert cells[5] == "0.47<br>0.779"  # best: lowest loss, highest accuracy over the epochs
    assert cells[6] == "+0.001<br>0 (in range)"
    assert cells[7] == "within tolerance"
    assert cells[8:12] == ["3", "59.5 s", "cuda:0, bf16-mixed", "61,706"]
    assert cells[12] == "`dl-run experiment=d2l/lenet optim.lr=0.5`"


def test_tolerance_marks_figures_off_the_book(tmp_path, capsys):
    fake_run(tmp_path / "a", {"history": history(0.80, 0.85, loss=0.47)})
    [row] = rows(capsys, tmp_path)  # 0.85 is 9% above 0.779; the default tolerance is 5%
    assert "**off** by more than 5%: val/acc" in row and "+0.071" in row
    [row] = rows(capsys, tmp_path, "--tolerance", "0.1")
    assert "within tolerance" in row and "**off**" not in row


def test_unfinished_and_shorter_runs_are_marked(tmp_path, capsys):
    fake_run(tmp_path / "a", {"history": history(0.5, 0.777), "status": "interrupted"}, max_epochs=10)
    [row] = rows(capsys, tmp_path)
    assert "**not finished**: interrupted" in row
    assert "| 2/10 |" in row


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no metrics.json"),
        ("", "metrics.json unreadable (JSONDecodeError"),
        ("[1, 2]", "metrics.json holds a JSON list, not an object"),
        ('{"status": "completed", "final": [1]}', "metrics.json has no final train/loss, val/acc"),
    ],
)
def test_broken_runs_get_a_row_not_a_crash(tmp_path, capsys, content, message):
    fake_run(tmp_path / "broken", content)
    fake_run(tmp_path / "good", {"history": history(0.777)})
    broken, good = rows(capsys, tmp_path)
    assert message in broken
    assert "within tolerance" in good


def test_a_run_without_a_book_block(tmp_path, capsys):
    fake_run(tmp_path / "smoke", {"history": history(0.5)}, book=None, overrides=["experiment=smoke"])
    zh = {"edition": "zh", "section": "1", "metrics": {}}
    fake_run(tmp_path / "bad", {"history": history(0.5)}, book=zh)
    bad, smoke = rows(capsys, tmp_path)
    assert "no book: block in .hydra/config.yaml" in smoke and "`smoke`" in smoke
    assert "book.edition='zh'" in bad


def test_folders_are_searched_but_a_runs_own_subfolders_are_not(tmp_path, capsys):
    sweep = tmp_path / "multirun" / "d2l_lenet" / "2026-01-01_00-00-00_abcd"
    for job in range(3):
        fake_run(
            sweep / str(job),
            {"history": history(0.777)},
            overrides=["experiment=d2l/lenet", f"optim.lr={job}"],
        )
    (sweep / "multirun.yaml").write_text("{}\n")
    kfold = fake_run(
        tmp_path / "outputs" / "house",
        None,
        overrides=["experiment=d2l/kaggle_house"],
        book={"edition": "v2", "section": "4.10", "metrics": {"val/log_rmse": 0.170}},
    )
    for k in range(2):
        fake_run(kfold / f"fold_{k}", {"history": [{"epoch": 1, "val/log_rmse": 0.16 + k / 100}]})
    mean = {"val/log_rmse": 0.165, "train/log_rmse": 0.16}
    (kfold / "metrics.json").write_text(
        json.dumps(
            {
                "status": "completed",
                "kfold": 2,
                "monitor": "val/log_rmse",
                "mean": mean,
                "std": mean,
                "num_params": 331,
                "wall_time_s": 10.0,
                "folds": [{"run_dir": "/elsewhere", "epochs": 1}] * 2,
            }
        )
    )
    out = rows(capsys, tmp_path)
    assert len(out) == 4
    house = next(r for r in out if "kaggle_house" in r)
    assert "0.165" in house and "1 × 2 folds" in house and "cuda:0, bf16-mixed" in house
    assert "within tolerance" in house
    assert sum("optim.lr=" in r for r in out) == 3


def test_csv_and_write_between_markers(tmp_path, capsys):
    fake_run(tmp_path / "runs" / "a", {"history": history(0.777)})
    fake_run(tmp_path / "runs" / "b", None)
    doc = tmp_path / "results.md"
    doc.write_text(f"# Results\n\nprose before\n\n{BEGIN}\nold table\n{END}\n\nprose after\n")
    table = tmp_path / "runs.csv"
    rows(capsys, tmp_path / "runs", "--csv", table, "--write", doc)
    text = doc.read_text()
    assert text.startswith("# Results\n\nprose before\n\n" + BEGIN)
    assert text.endswith(END + "\n\nprose after\n")
    assert "old table" not in text and "| `d2l/lenet` |" in text
    rows(capsys, tmp_path / "runs", "--write", doc)
    assert doc.read_text().count(BEGIN) == 1
    with open(table) as f:
        records = list(csv.DictReader(f))
    assert [(r["metric"], r["off"]) for r in records if r["metric"]] == [
        ("train/loss", "False"),
        ("val/acc", "False"),
    ]
    assert [r["problems"] for r in records if not r["metric"]][0].startswith("no metrics.json")


def test_write_between_appends_markers_to_a_file_without_them(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("hand-written\n")
    write_between(doc, BEGIN, END, "table")
    assert doc.read_text() == f"hand-written\n\n{BEGIN}\ntable\n{END}\n"


def test_bad_arguments_say_what_to_do(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no run directories" in capsys.readouterr().err


def test_a_real_run(tmp_path):
    book = "+book={edition:v2,section:'0',metrics:{val/acc:0.1,train/loss:[1.0,5.0]}}"
    run_cli(["experiment=smoke", "logger=none", "trainer.checkpoint=false", book], cwd=tmp_path)
    proc = run_cli(["experiment=smoke", "logger=none", "trainer.checkpoint=false"], cwd=tmp_path)
    assert proc.returncode == 0
    out = tmp_path / "report.md"
    assert main([str(tmp_path / "outputs"), "--write", str(out)]) == 0
    text = out.read_text()
    with_book = next(line for line in text.splitlines() if "v2 §0" in line)
    metrics = json.loads(next((tmp_path / "outputs").rglob("metrics.json")).read_text())
    assert metrics["status"] == "completed"
    assert "| 2 |" in with_book and "| cpu, 32 |" in with_book and "61,706" in with_book
    assert "0 (in range)" in with_book  # train/loss of a 2-epoch smoke run lies in [1, 5]
    assert "no book: block" in text
