"""dlrun.console: the config tree at the start of a run, the summary table at its end."""

from conftest import run_cli

from dlrun.console import config_tree, render, summary_table

RESULT = {
    "status": "completed",
    "epochs": 3,
    "global_step": 30,
    "wall_time_s": 12.34,
    "train_examples_per_s": 4321.0,
    "final": {"train/loss": 0.5, "val/loss": 0.61, "val/acc": 0.8, "lr": 0.1},
    "best": {"epoch": 2, "train/loss": 0.55, "val/loss": 0.6, "val/acc": 0.81, "lr": 0.1},
    "monitor": "val/acc",
    "num_params": 61706,
    "device": "cpu",
    "precision": "32",
    "run_dir": "/runs/smoke/1",
}


def test_summary_table_has_final_and_best_of_every_metric():
    text = summary_table(RESULT)
    assert "completed: 3 epochs, 30 steps in 12.3s (4,321 train examples/s)" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert rows["train/loss"] == ["0.5", "0.55"]
    assert rows["val/acc"] == ["*", "0.8", "0.81"]  # the monitor is marked
    assert "lr" not in rows  # train/ and val/ metrics only
    assert "best (epoch 2)" in text and "params 61,706   device cpu   precision 32" in text
    assert "run    /runs/smoke/1" in text
    assert "\x1b[" not in text and "\x1b[" in summary_table(RESULT, color=True)


def test_summary_table_without_a_best_epoch():
    text = summary_table(RESULT | {"best": None})
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert "best" not in text and rows["val/acc"] == ["*", "0.8"]


def test_config_tree_has_one_branch_per_group(compose_cfg):
    text = render(config_tree(compose_cfg(["experiment=smoke"])))
    branches = [line[4:] for line in text.splitlines() if line.startswith(("├── ", "└── "))]
    assert branches[:8] == ["data", "model", "task", "optim", "sched", "trainer", "logger", "paths"]
    assert "name: smoke" in branches and "print_config: true" in branches and "hydra" not in branches
    assert "batch_size: 64" in text.split("├── model")[0]  # the data branch holds its YAML


def test_run_prints_the_tree_plain_and_saves_it(tmp_path):
    proc = run_cli(
        ["experiment=smoke", "trainer.max_epochs=1", "logger=none", "trainer.checkpoint=false"], tmp_path
    )
    (saved,) = tmp_path.rglob("config_tree.txt")
    tree = saved.read_text()
    assert tree.startswith("config\n├── data\n") and "max_epochs: 1" in tree and "\x1b[" not in tree
    assert tree in proc.stdout  # stdout is a pipe here: the same plain text
    quiet = run_cli(
        ["experiment=smoke", "trainer.max_epochs=1", "logger=none", "print_config=false"], tmp_path
    )
    assert "├── data" not in quiet.stdout
