"""init_from: start a fresh run from another run's weights (the weights alone: no optimizer, epoch or RNG).

`init_skip` names the layers (parameter-name prefixes, e.g. `12` or `net.fc`) that keep their fresh init: a
new classifier head for other classes. Every other weight must fit; a mismatch the user did not name stops
the run with the keys and the `init_skip` that would skip them.
"""

import logging
from pathlib import Path

from torch import nn

from dlrun.engine import checkpoint
from dlrun.errors import DlrunError

log = logging.getLogger("dlrun")


def resolve(source) -> Path:
    """A .ckpt file, or a run dir's best.ckpt, else its last.ckpt."""
    if str(source).startswith("<"):  # an experiment's placeholder, e.g. <run dir of d2l/..._pretrain>
        raise DlrunError(
            f"init_from={source}: this run starts from another one; give its path, init_from=DIR"
        )
    path = Path(str(source)).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in (checkpoint.BEST, checkpoint.LAST):
            if (path / name).is_file():
                return path / name
        raise DlrunError(
            f"init_from={source}: no {checkpoint.BEST} or {checkpoint.LAST} in {path.resolve()}; "
            "point it at a finished run's directory or a .ckpt file"
        )
    raise DlrunError(
        f"init_from={source}: {path.resolve()} does not exist; give a run directory or a .ckpt file"
    )


def _skipped(key: str, prefixes: list[str]) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def _layer(key: str) -> str:
    return key.rsplit(".", 1)[0]


def load_into(model: nn.Module, source, skip=()) -> dict:
    """Load `source`'s weights into `model`, leaving the keys under the `skip` prefixes at their fresh init.
    Returns {"path", "loaded", "skipped"} (key lists) for the log and for tests."""
    path = resolve(source)
    state = checkpoint.load(path)["model"]
    own = model.state_dict()
    prefixes = [str(p) for p in skip or ()]
    unused = [p for p in prefixes if not any(_skipped(k, [p]) for k in (*own, *state))]
    if unused:
        raise DlrunError(
            f"init_skip: {', '.join(unused)} names no weight of this model or of {path}; "
            f"its layers are: {', '.join(dict.fromkeys(_layer(k) for k in own))}"
        )
    misfits = [
        k
        for k in dict.fromkeys((*own, *state))
        if not _skipped(k, prefixes)
        and (k not in own or k not in state or tuple(own[k].shape) != tuple(state[k].shape))
    ]
    layers = list(dict.fromkeys(_layer(k) for k in misfits))
    hint = (
        f"to keep the fresh init of those layers (a new head), add init_skip=[{','.join(layers)}]"
        if layers
        else ""
    )
    kept = {k: v for k, v in state.items() if not _skipped(k, prefixes)}
    skipped = [k for k in own if _skipped(k, prefixes)]
    checkpoint.load_model_weights(model, kept | {k: own[k] for k in skipped}, path, hint)
    loaded = [k for k in own if k in kept]
    log.info(
        "init_from %s: loaded %d of %d tensors%s",
        path,
        len(loaded),
        len(own),
        f"; fresh init (init_skip): {', '.join(skipped)}" if skipped else "",
    )
    return {"path": path, "loaded": loaded, "skipped": skipped}
