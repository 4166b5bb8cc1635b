"""This process's place in a torchrun job, read from the variables torchrun sets. Imports no torch, so the
config resolvers and the sweep callback can ask it before a run starts."""

import os


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))
