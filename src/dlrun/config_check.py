"""Check the composed config against what its consumers declare, before any data is loaded.

Every node with a `_target_` in the instantiable groups is checked against the target's signature: each key
must be one of its parameters (unless it takes **kwargs) and each value must fit the parameter's annotation
(typing.get_type_hints) and the ranges declared with typing.Annotated (dlrun.ranges: Min, Max, Parsed).
Constructors dlrun cannot annotate (torch's, the engine's Trainer) get their ranges from EXTERNAL_RANGES.
Resolving a `_target_` imports its module (torch, for most).
"""

import inspect
import types
import typing
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union

from omegaconf import DictConfig, OmegaConf

from dlrun.errors import DlrunError, first_line
from dlrun.ranges import Max, Min, OneOf, Parsed

GROUPS = ("model", "data", "task", "optim", "sched.scheduler", "trainer", "logger")

# Keys of a group that run.py takes out before instantiating (checked, if at all, in PLAIN_KEYS).
NOT_ARGUMENTS = {"model": {"input_size"}, "trainer": {"kfold", "kfold_refit"}}

# Plain keys (no `_target_` reads them as arguments): their type, as an annotation.
PLAIN_KEYS = {
    "sched.interval": Literal["epoch", "step"],
    "trainer.kfold": Annotated[int, Min(2)] | None,
    "trainer.kfold_refit": bool,
    "model.input_size": Annotated[int, Min(1)] | None,
    "seed": int,
    "print_config": bool,
    "init_from": str | None,
    "init_skip": list[str] | None,
}

# Ranges of constructors whose signatures dlrun does not own, keyed by `_target_` (a key ending in "."
# covers a whole package). The rest of their checking (types, unknown keys) comes from their signatures.
NON_NEGATIVE = (Min(0),)
EXTERNAL_RANGES: dict[str, dict[str, tuple]] = {
    "torch.optim.lr_scheduler.": {"step_size": (Min(1),), "gamma": NON_NEGATIVE, "T_max": (Min(1),)},
    "torch.optim.": {
        "lr": NON_NEGATIVE,
        "momentum": NON_NEGATIVE,
        "dampening": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "eps": NON_NEGATIVE,
    },
    "dlrun.engine.trainer.Trainer": {
        "precision": (Parsed("dlrun.engine.device:Precision.parse"),),
        "device": (Parsed("dlrun.config_check:device_spec"),),
        "strategy": (OneOf("auto", "single", "ddp"),),
        "ddp_backend": (OneOf("auto", "gloo", "nccl"),),
        "gradient_clip_algorithm": (OneOf("norm", "value"),),
        "monitor_mode": (OneOf("min", "max"),),
        "matmul_precision": (OneOf("highest", "high", "medium"),),
        "accumulate_grad_batches": (Min(1),),
        "checkpoint_every_n_epochs": (Min(1),),
        "check_val_every_n_epoch": (Min(1),),
        "log_every_n_steps": (Min(1),),
        "gradient_clip_val": NON_NEGATIVE,
        "limit_train_batches": NON_NEGATIVE,
        "limit_val_batches": NON_NEGATIVE,
    },
}


_ABSENT = object()


def check_config(cfg: DictConfig) -> None:
    """Raise DlrunError naming the first key whose value its consumer does not accept."""
    for path, annotation in PLAIN_KEYS.items():
        value = OmegaConf.select(cfg, path, default=_ABSENT)
        if OmegaConf.is_config(value):  # a list (init_skip) is checked as the plain list it holds
            value = OmegaConf.to_container(value, resolve=True)
        if value is not _ABSENT:
            _check_value(path, value, annotation, "", ())
    for group in GROUPS:
        node = OmegaConf.select(cfg, group, default=None)
        if node is None:
            continue
        tree = OmegaConf.to_container(node, resolve=True)
        if isinstance(tree, dict):
            _check_node(group, tree, NOT_ARGUMENTS.get(group, set()))


def _check_node(path: str, node: dict, skip=()) -> None:
    """A `_target_` node against its target's signature; nested nodes on their own."""
    target = node.get("_target_")
    if target is None:
        for key, value in node.items():
            if isinstance(value, dict):
                _check_node(f"{path}.{key}", value)
        return
    params, takes_kwargs, hints = _signature(path, target)
    ranges = _external_ranges(target)
    for key, value in node.items():
        key_path = f"{path}.{key}"
        if key.startswith("_") or key in skip:
            continue
        if isinstance(value, dict):
            _check_node(key_path, value)
        if key not in params:
            if takes_kwargs:
                continue
            allowed = ", ".join(name for name in params if name not in ("self", "params"))
            raise DlrunError(f"{key_path} is not an argument of {target}; it takes: {allowed}")
        if value == "???":  # filled in at run time (data.model_kwargs)
            continue
        if value is None and params[key].default is None:
            continue
        _check_value(key_path, value, hints.get(key, Any), f"{key} of {target} ", ranges.get(key, ()))


def _check_value(key_path: str, value, annotation, whose: str, extra_ranges: tuple) -> None:
    def reject(allowed: str):
        shown = "null" if value is None else value
        raise DlrunError(f"{key_path}={shown} is not allowed: {whose}must be {allowed}")

    if isinstance(value, dict) and "_target_" in value:
        return  # instantiated from its own node
    if not _fits(value, annotation):
        reject(_describe(annotation))
    if value is None:
        return
    for rule in (*_metadata(annotation, value), *extra_ranges):
        if isinstance(rule, (Min, Max)):
            if _is_number(value) and not rule.allows(value):
                reject(str(rule))
        elif isinstance(rule, OneOf):
            if not rule.allows(value):
                reject(str(rule))
        elif isinstance(rule, Parsed):
            problem = rule.check(value)
            if problem:
                reject(problem)


def _signature(path: str, target: str) -> tuple[dict, bool, dict]:
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's _target_
        raise DlrunError(f"{path}._target_={target} cannot be imported: {first_line(err)}") from None
    func = obj.__init__ if inspect.isclass(obj) else obj
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return {}, True, {}
    params = dict(signature.parameters)
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable forward references: fall back to what is there
        hints = {k: p.annotation for k, p in params.items() if not isinstance(p.annotation, str)}
    hints = {k: v for k, v in hints.items() if v is not inspect.Parameter.empty}
    return params, takes_kwargs, hints


def _external_ranges(target: str) -> dict[str, tuple]:
    ranges: dict[str, tuple] = {}
    for prefix, table in EXTERNAL_RANGES.items():
        if target == prefix or (prefix.endswith(".") and target.startswith(prefix)):
            ranges = table | ranges  # the longer (earlier) prefix wins
    return ranges


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fits(value, annotation) -> bool:
    """Whether a config value (a YAML scalar, list or dict) fits a type annotation."""
    if annotation is Any or isinstance(annotation, (typing.TypeVar, str)):
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _fits(value, args[0])
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if annotation is None or annotation is type(None):
        return value is None
    if isinstance(value, dict) and "_target_" in value:
        return True
    kind = origin or annotation
    if not isinstance(kind, type):
        return True  # Callable[...], Protocols, ...: nothing a YAML scalar can be checked against
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return kind is object
    if kind is float:
        return isinstance(value, (int, float))
    if kind in (str, PurePath) or issubclass(kind, PurePath):
        return isinstance(value, str)
    if kind in (list, tuple, typing.Sequence) or (origin is not None and issubclass(kind, (list, tuple))):
        return isinstance(value, (list, tuple))
    try:
        return isinstance(value, kind)
    except TypeError:
        return True


def _metadata(annotation, value) -> list:
    """The Annotated metadata that applies to `value` (in a union: of the member it fits)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return list(annotation.__metadata__) + _metadata(args[0], value)
    if origin in (Union, types.UnionType):
        for arg in args:
            if _fits(value, arg):
                return _metadata(arg, value)
    return []


def _describe(annotation) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return " ".join([_describe(args[0]), *(str(m) for m in annotation.__metadata__)])
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    if annotation is None or annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


# trainer.device without importing torch (engine/device.py checks it against the hardware later).
def device_spec(value) -> None:
    spec = str(value)
    kind, _, index = spec.partition(":")
    if kind not in ("auto", "cpu", "cuda", "mps") or (index and not (kind == "cuda" and index.isdigit())):
        raise ValueError("one of auto, cpu, cuda, cuda:N, mps")
