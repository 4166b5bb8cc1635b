"""scripts/bench_gpu.py: it says it needs CUDA and exits 0 without one; its measurements run on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"
ENV = os.environ | {"PYTHONPATH": str(SCRIPT.parents[1] / "src")}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script would measure")
def test_without_cuda_it_says_so_and_exits_0():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0 and "needs CUDA" in proc.stdout


@pytest.mark.parametrize("loop", ["bare", "dlrun"])
def test_one_measurement_reports_images_per_s_and_training_flops(loop):
    cmd = [sys.executable, str(SCRIPT), "--one", loop, "--models", "lenet", "--batches", "4"]
    cmd += ["--modes", "bf16_cl", "--steps", "2", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["images_per_s"] > 0
    # LeNet's forward: conv1 0.235 + conv2 0.48 + dense 0.118 MFLOPs per 28x28 image; the backward pass
    # doubles that, less conv1's input gradient (nothing needs it): ~2.26 MFLOPs per training image
    assert 2.0e6 < result["train_flops_per_image"] < 2.6e6
