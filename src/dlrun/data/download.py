"""Fetching the book's data files: checked against their sha1, written atomically."""

import hashlib
import shutil
import urllib.request
from pathlib import Path

from dlrun.atomic import replacing


def sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, path: Path, expected_sha1: str | None = None, timeout: float = 30.0) -> Path:
    """Fetch url to path (atomically), checking the sha1 when given; raises OSError/ValueError on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out)
        if expected_sha1 is not None and (digest := sha1(tmp)) != expected_sha1:
            raise ValueError(f"sha1 of {url} is {digest}, expected {expected_sha1}")
    return path
