"""Files written so that a reader sees the old one or the new one, never half of either."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path` to write to. When the block ends without an error the file replaces
    `path` in one step (os.replace); otherwise it is removed. `suffix` keeps an extension for writers that
    read the format from the name (matplotlib, PIL). The pid in the name keeps concurrent processes apart."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
