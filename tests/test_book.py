"""Every d2l experiment carries the book's figures (`book:`), and the 1.0 edition is a config set on top."""

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dlrun.report import book_problem

EXPERIMENTS = Path(__file__).resolve().parents[1] / "conf" / "experiment"
NAMES = sorted(f"{p.parent.name}/{p.stem}" for p in EXPERIMENTS.glob("d2l*/*.yaml"))
# Chapters only the 1.0 edition has (GANs): their d2l/ experiments carry 1.0 figures.
EN_ONLY = {"d2l/gan", "d2l/dcgan_fmnist"}


def test_both_editions_are_there():
    assert sum(n.startswith("d2l/") for n in NAMES) >= 30
    assert sum(n.startswith("d2l_en/") for n in NAMES) >= 14


@pytest.mark.parametrize("name", NAMES)
def test_book_block_is_well_formed(compose_cfg, name):
    book = OmegaConf.to_container(compose_cfg([f"experiment={name}"]).book)
    assert book_problem(book) is None, book_problem(book)
    assert book["edition"] == ("en" if name.startswith("d2l_en/") or name in EN_ONLY else "v2")
    numbers = [v for v in book["metrics"].values() if v is not None]
    assert numbers or (book.get("printed") is False and book.get("note"))
    for metric in book["metrics"]:
        assert metric.startswith(("train/", "val/")), metric


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("d2l_en/")])
def test_en_book_block_is_its_own(compose_cfg, name):
    """The 1.0 config reuses the v2 one through defaults; none of the v2 figures may leak into its book."""
    own = OmegaConf.load(EXPERIMENTS / f"{name}.yaml").book
    composed = compose_cfg([f"experiment={name}"]).book
    assert OmegaConf.to_container(composed) == OmegaConf.to_container(own)


def test_book_problems_are_caught():
    good = {"edition": "v2", "section": "6.6", "metrics": {"val/acc": [0.776, 0.779], "train/loss": 0.469}}
    assert book_problem(good) is None
    assert "edition" in book_problem(good | {"edition": "zh"})
    assert "section" in book_problem(good | {"section": 6.6})
    assert "val/acc" in book_problem(good | {"metrics": {"val/acc": [0.8, 0.7]}})
    assert "val/acc" in book_problem(good | {"metrics": {"val/acc": "high"}})
    assert "empty" in book_problem(good | {"metrics": {}})
    assert book_problem(good | {"metrics": {}, "printed": False, "note": "plots only"}) is None


def test_book_does_not_change_training(compose_cfg):
    """The v2 LeNet composes with and without its book block to the same training config."""
    with_book = OmegaConf.to_container(compose_cfg(["experiment=d2l/lenet"]), resolve=False)
    without = OmegaConf.to_container(compose_cfg(["experiment=d2l/lenet", "~book"]), resolve=False)
    assert "book" in with_book and "book" not in without
    for cfg in (with_book, without):
        cfg.pop("book", None), cfg.pop("hydra")
    assert with_book == without


def test_nothing_but_dl_report_reads_book():
    src = Path(__file__).resolve().parents[1] / "src" / "dlrun"
    reads = re.compile(r"""\.book\b|\[["']book["']\]|get\(["']book["']""")
    readers = [p.name for p in src.rglob("*.py") if reads.search(p.read_text())]
    assert readers == ["report.py"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("d2l_en/lenet", {"data.batch_size": 128, "optim.lr": 0.1, "trainer.max_epochs": 10}),
        ("d2l_en/lenet_bn", {"data.batch_size": 128, "optim.lr": 0.1, "model.batchnorm": "scratch"}),
        ("d2l_en/mlp_dropout", {"model.dropout": [0.5, 0.5], "optim.lr": 0.1, "data.batch_size": 256}),
        ("d2l_en/vgg", {"optim.lr": 0.01, "data.batch_size": 128}),
        ("d2l_en/nin", {"optim.lr": 0.05}),
        ("d2l_en/googlenet", {"optim.lr": 0.01}),
        ("d2l_en/rnn_scratch", {"data.batch_size": 1024, "data.num_steps": 32, "model.hidden_size": 32,
                                "optim.lr": 1, "trainer.max_epochs": 100, "data.max_tokens": None}),
        ("d2l_en/gru", {"data.batch_size": 1024, "model.hidden_size": 32, "optim.lr": 4,
                        "trainer.max_epochs": 50, "trainer.gradient_clip_val": 1}),
        ("d2l_en/lstm_scratch", {"model.hidden_size": 32, "optim.lr": 4, "trainer.max_epochs": 50}),
        ("d2l_en/seq2seq", {"model.embed_size": 256, "model.hidden_size": 256, "model.dropout": 0.2,
                            "model.init": "xavier", "data.batch_size": 128, "data.num_steps": 9,
                            "trainer.max_epochs": 30, "optim.lr": 0.005}),
        ("d2l_en/bahdanau", {"model.hidden_size": 256, "model.dropout": 0.2, "data.num_steps": 9,
                             "trainer.max_epochs": 30}),
    ],
)  # fmt: skip
def test_en_settings(compose_cfg, name, expected):
    cfg = compose_cfg([f"experiment={name}"])
    got = {key: OmegaConf.select(cfg, key) for key in expected}
    got = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in got.items()}
    assert got == expected
    v2 = compose_cfg([f"experiment={name.replace('d2l_en/', 'd2l/')}"])
    assert cfg.model._target_ == v2.model._target_ and cfg.data._target_ == v2.data._target_


def test_help_lists_both_editions(tmp_path):
    from conftest import run_cli

    out = run_cli(["--help"], cwd=tmp_path).stdout
    assert "experiment/d2l:" in out and "experiment/d2l_en:" in out
