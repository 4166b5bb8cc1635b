"""dlrun.signature_cache: a target checked once is checked again without importing it (no torch for a bad
value), gives the same answer as the import, and is re-read when its files change."""

import json
import os
import subprocess
import sys
from typing import Annotated

import pytest
from conftest import CONF_DIR
from omegaconf import OmegaConf

from dlrun.config_check import check_config
from dlrun.errors import DlrunError
from dlrun.ranges import Min
from dlrun.signature_cache import FILE_NAME, decode, encode, shape_of

BAD_VALUES = [
    "optim.lr=abc",
    "trainer.max_epochs=ten",
    "data.batch_size=0",
    "trainer.precision=64",
    "sched.interval=batch",
    "+optim.lr_decay=0.5",
]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("DLRUN_CACHE_DIR", str(path))
    return path


def error_of(cfg) -> str:
    with pytest.raises(DlrunError) as err:
        check_config(cfg)
    return str(err.value)


def no_imports(monkeypatch):
    def refuse(target):
        raise AssertionError(f"imported {target}")

    monkeypatch.setattr("hydra.utils.get_object", refuse)


@pytest.mark.parametrize("override", BAD_VALUES)
def test_warm_cache_gives_the_cold_error_without_importing(compose_cfg, cache_dir, monkeypatch, override):
    cfg = compose_cfg(["data=fake", override])
    cold = error_of(cfg)
    assert cold.startswith(override.lstrip("+").split("=")[0]) and "\n" not in cold
    if override.startswith("sched.interval"):
        return  # a plain key: found before any target is read
    assert json.loads((cache_dir / FILE_NAME).read_text())["entries"]
    no_imports(monkeypatch)
    assert error_of(cfg) == cold


def test_default_config_passes_from_a_warm_cache(compose_cfg, cache_dir, monkeypatch):
    cfg = compose_cfg(["data=fake"])
    check_config(cfg)
    no_imports(monkeypatch)
    check_config(cfg)


CHECK_SCRIPT = """
import sys
from hydra import compose, initialize_config_dir
from dlrun import resolvers  # noqa: F401
from dlrun.config_check import check_config
from dlrun.errors import DlrunError

with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    cfg = compose("train", overrides=sys.argv[2:])
try:
    check_config(cfg)
except DlrunError as err:
    print(err)
print("torch imported" if "torch" in sys.modules else "no torch")
"""


def check_in_subprocess(overrides, env) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT, str(CONF_DIR), *overrides],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_bad_value_from_a_warm_cache_does_not_import_torch(tmp_path):
    env = {"DLRUN_CACHE_DIR": str(tmp_path / "cache")}
    overrides = ["data=fake", "trainer.precision=64"]
    cold = check_in_subprocess(overrides, env)
    warm = check_in_subprocess(overrides, env)
    assert cold[0].startswith("trainer.precision=64 is not allowed") and cold[1] == "torch imported"
    assert warm == [cold[0], "no torch"]


def write_target(root, init: str, mtime_ns: int) -> None:
    path = root / "sigcache_fake_target.py"
    path.write_text(f"class Net:\n    def __init__(self, {init}):\n        pass\n")
    os.utime(path, ns=(mtime_ns, mtime_ns))
    sys.modules.pop("sigcache_fake_target", None)


def test_edited_target_file_is_read_again(tmp_path, cache_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sigcache_fake_target", raising=False)
    cfg = OmegaConf.create({"model": {"_target_": "sigcache_fake_target.Net", "width": "wide"}})
    write_target(tmp_path, "width: int = 1", 10**18)
    assert error_of(cfg).startswith("model.width=wide is not allowed: width of sigcache_fake_target.Net")
    write_target(tmp_path, "width: str = 'a', depth: int = 1", 2 * 10**18)
    check_config(cfg)  # the stale entry (width: int) would reject it
    cfg.model.depth = "deep"
    assert error_of(cfg).startswith("model.depth=deep is not allowed")


def test_unwritable_or_corrupt_cache_still_checks(tmp_path, compose_cfg, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("DLRUN_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    cfg = compose_cfg(["data=fake", "optim.lr=abc"])
    message = error_of(cfg)
    assert message.startswith("optim.lr=abc is not allowed: lr of torch.optim.SGD must be float")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / FILE_NAME).write_text("{not json")
    monkeypatch.setenv("DLRUN_CACHE_DIR", str(corrupt))
    assert error_of(cfg) == message
    assert json.loads((corrupt / FILE_NAME).read_text())["entries"]  # replaced by a good one


class Note:
    """Annotated metadata with no JSON form."""

    def __str__(self) -> str:
        return "noted"


class Unusual:
    def __init__(self, size: Annotated[int, Min(1), Note()] = 1):
        pass


def test_target_with_unserialisable_rule_is_checked_but_not_cached(cache_dir):
    cfg = OmegaConf.create({"model": {"_target_": f"{__name__}.Unusual", "size": 0}})
    assert error_of(cfg).startswith(f"model.size=0 is not allowed: size of {__name__}.Unusual must be >= 1")
    entries = json.loads((cache_dir / FILE_NAME).read_text())["entries"] if cache_dir.exists() else {}
    assert not any(key.startswith(f"{__name__}.Unusual ") for key in entries)


def test_shapes_survive_json():
    annotation = Annotated[int, Min(1, exclusive=True)] | float | None
    shape = shape_of(annotation)
    assert decode(json.loads(json.dumps(encode(shape)))) == shape
