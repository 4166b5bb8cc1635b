"""The wheel carries every module and every config, so `pip install .` works from any directory."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_all_modules_and_configs(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("dlrun-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        f"dlrun/{p.relative_to(ROOT / 'src' / 'dlrun')}" for p in (ROOT / "src" / "dlrun").rglob("*.py")
    }
    configs = {f"dlrun/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert modules - names == set()
    assert configs - names == set()
    assert "dlrun/data/vision.py" in names and "dlrun/conf/data/fashion_mnist.yaml" in names
