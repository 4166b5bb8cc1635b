"""Sweeps on real launchers (joblib, submitit) and Optuna searches: the `sweep` and `slurm` extras, which
the dev extra (CI) installs. Without them these tests skip."""

import csv
import json
import subprocess
import sys

import pytest
import yaml
from conftest import run_cli
from hydra.utils import instantiate
from omegaconf import OmegaConf

TINY = [
    "experiment=smoke",
    "trainer.max_epochs=1",
    "logger=none",
    "trainer.checkpoint=false",
    "trainer.curves=false",
]


def summary_rows(sweep_dir):
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_two_sweeps_on_parallel_launchers_started_together_keep_their_own_dirs(tmp_path):
    """Each launcher runs its jobs in other processes, which must still write into their sweep's dir (the
    run stamp travels with the config), and two sweeps started in the same second must not share one."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launchers = {
        "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        "submitit_local": ["hydra/launcher=submitit_local"],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "dlrun", "-m", *args, *TINY, "optim.lr=0.05,0.1"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in launchers.items()
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}:\n{err}"
    sweeps = sorted((tmp_path / "multirun" / "smoke").iterdir())
    assert len(sweeps) == 2, sweeps  # one dir per sweep: no job strayed into a dir of its own
    seen = set()
    for sweep in sweeps:
        launcher = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["runtime"]["choices"]
        seen.add(launcher["hydra/launcher"])
        jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
        assert [j.name for j in jobs] == ["0", "1"]
        lrs = [json.loads((j / "metrics.json").read_text())["final"]["lr"] for j in jobs]
        assert lrs == [0.05, 0.1]
        rows = summary_rows(sweep)  # the SweepSummary callback ran in the launching process
        assert [r["overrides"] for r in rows] == ["optim.lr=0.05", "optim.lr=0.1"]
        assert {r["status"] for r in rows} == {"completed"}
    assert seen == set(launchers)


def test_optuna_search_runs_its_trials_and_records_the_best(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    run_cli(
        [
            "-m",
            "hparams_search=lenet_optuna",
            *TINY,
            "hydra.sweeper.n_trials=4",
            # the search space from the command line: replaces the config's ranges
            "optim.lr=tag(log, interval(0.01, 0.5))",
            "data.batch_size=choice(32, 64)",
        ],
        tmp_path,
    )
    (sweep,) = (tmp_path / "multirun" / "smoke").iterdir()
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    best = results["best_params"]
    assert set(best) == {"optim.lr", "data.batch_size"}
    assert 0.01 <= best["optim.lr"] <= 0.5 and best["data.batch_size"] in (32, 64)
    trials = sorted(sweep.glob("*/metrics.json"), key=lambda p: int(p.parent.name))
    assert len(trials) == 4
    # what Optuna maximised is each trial's best val/acc, the value dl-run returns
    best_accs = [json.loads(p.read_text())["best"]["val/acc"] for p in trials]
    assert results["best_value"] == pytest.approx(max(best_accs))
    for trial in trials:
        overrides = yaml.safe_load((trial.parent / ".hydra" / "overrides.yaml").read_text())
        assert any(o.startswith("optim.lr=") for o in overrides)
        assert any(o.startswith("data.batch_size=") for o in overrides)
    assert len(summary_rows(sweep)) == 4


def test_hparams_search_config_composes(compose_cfg):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose_cfg(["hparams_search=lenet_optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize" and sweeper.n_trials == 8 and sweeper.n_jobs == 1
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 42
    assert dict(sweeper.params) == {
        "optim.lr": "tag(log, interval(0.01, 1.0))",
        "data.batch_size": "choice(64, 128, 256)",
    }
    assert cfg.optimized_metric == "val/acc"
    assert compose_cfg([]).hydra.sweeper._target_.endswith("BasicSweeper")  # the group is optional


def test_a_diverging_job_does_not_end_the_sweep(tmp_path):
    proc = run_cli(["-m", *TINY, "model=mlp", "optim.lr=1e30,0.1"], tmp_path)
    assert "error: training loss became nan" in proc.stderr
    (sweep,) = (tmp_path / "multirun" / "smoke").iterdir()
    statuses = [r["status"] for r in summary_rows(sweep)]
    assert statuses == ["failed: non-finite loss", "completed"]
    assert "jobs that did not complete: 0 (failed: non-finite loss)" in proc.stdout + proc.stderr


def test_slurm_launcher_composes_into_an_sbatch_script(compose_cfg, tmp_path, monkeypatch):
    """No cluster here: compose hydra/launcher=slurm, let submitit write its sbatch script, stop there."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.chdir(tmp_path)
    cfg = compose_cfg(
        ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=30", *TINY]
    )
    launcher_cfg = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher_cfg["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher_cfg["submitit_folder"].startswith("multirun/smoke/")
    assert launcher_cfg["submitit_folder"].endswith("/.submitit/%j")
    expected = {"partition": "gpu", "gpus_per_node": 1, "tasks_per_node": 1, "cpus_per_task": 8, "mem_gb": 32}
    assert {k: launcher_cfg[k] for k in expected} == expected

    scripts = []

    def capture(self, command):
        scripts.append(self._make_submission_file_text(command, "uid"))
        raise RuntimeError("no cluster here")

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # as if srun were there
    monkeypatch.setattr(SlurmExecutor, "_submit_command", capture)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(RuntimeError, match="no cluster here"):
        launcher.launch([["optim.lr=0.1"], ["optim.lr=0.5"]], initial_job_idx=0)
    (script,) = scripts
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=30",
        "#SBATCH --array=0-1",
        "export OMP_NUM_THREADS=8",
    ):
        assert line in script, f"{line}\n{script}"
