"""OmegaConf resolvers used by conf/: registered once, before Hydra composes a config."""

import os

from omegaconf import OmegaConf

# Random per process: two runs started in the same second still get different directories.
RUN_ID = os.urandom(2).hex()


def _coalesce(*values):
    """The first value that is not null: ${coalesce:${data.resize},${data.size}}."""
    return next((v for v in values if v is not None), None)


def register() -> None:
    for name, fn in {
        "coalesce": _coalesce,
        "minus": lambda a, b: a - b,
        "run_id": lambda: RUN_ID,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register()
