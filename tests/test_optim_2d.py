"""The optimization chapter's 2-D toys: the book's printed end points, the files, seeded SGD noise."""

import csv
import shlex
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dlrun.data.steps import EmptyBatches
from dlrun.errors import DlrunError
from dlrun.models.point2d import Point2D
from dlrun.run import run

QUIET = ["experiment=d2l/optim_2d", "logger=none", "trainer.progress_bar=false", "print_config=false"]


def path_of(compose_cfg, overrides):
    cfg = compose_cfg([*QUIET, *overrides])
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    with (run_dir / "trajectory.csv").open() as f:
        rows = list(csv.DictReader(f))
    return run_dir, [(float(r["x1"]), float(r["x2"]), float(r["f"])) for r in rows]


def book_points(compose_cfg):
    return OmegaConf.to_container(compose_cfg(["experiment=d2l/optim_2d"]).book.points)


def test_every_printed_end_point(compose_cfg):
    points = book_points(compose_cfg)
    assert len(points) == 8
    for point in points:
        _, path = path_of(compose_cfg, shlex.split(point["run"]))
        assert len(path) == 21, point  # the start and 20 updates
        assert path[0][:2] == (-5.0, -2.0)
        x1, x2, _ = path[-1]
        assert abs(x1 - point["end"][0]) < 1e-5 and abs(x2 - point["end"][1]) < 1e-5, (point, x1, x2)


def test_files_and_the_function(compose_cfg):
    run_dir, path = path_of(compose_cfg, ["model.function=bowl", "data.steps=5", "optim.lr=0.1"])
    assert (run_dir / "trajectory.png").stat().st_size > 5000
    assert len(path) == 6
    for x1, x2, f in path:
        assert f == pytest.approx(x1**2 + 2 * x2**2, rel=1e-12)
    # gradient descent on x1^2 + 2 x2^2 at lr 0.1: x1 shrinks by 1 - 0.2, x2 by 1 - 0.4 each step
    assert path[-1][0] == pytest.approx(-5 * 0.8**5) and path[-1][1] == pytest.approx(-2 * 0.6**5)


def test_noisy_sgd_is_seeded(compose_cfg):
    noisy = ["model.grad_noise=1", "optim.lr=0.1"]
    a = path_of(compose_cfg, [*noisy, "seed=1"])[1]
    b = path_of(compose_cfg, [*noisy, "seed=1"])[1]
    c = path_of(compose_cfg, [*noisy, "seed=2"])[1]
    clean = path_of(compose_cfg, ["optim.lr=0.1"])[1]
    assert a == b and a[-1] != c[-1] and a[-1] != clean[-1]


def test_empty_batches_and_bad_options():
    assert len(EmptyBatches(20, skip=5)) == 20 and list(EmptyBatches(3, skip=1)) == [(), ()]
    with pytest.raises(DlrunError, match="model.function"):
        Point2D(function="saddle")
    with pytest.raises(DlrunError, match="model.start"):
        Point2D(start=[1.0, 2.0, 3.0])
    assert Point2D()().item() == pytest.approx(0.1 * 25 + 2 * 4)
    assert Point2D().point.dtype == torch.float64
