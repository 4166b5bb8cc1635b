"""Check the composed config against what its consumers declare, before any data is loaded.

Every node with a `_target_` in the instantiable groups is checked against the target's signature: each key
must be one of its parameters (unless it takes **kwargs) and each value must fit the parameter's annotation
(typing.get_type_hints) and the ranges declared with typing.Annotated (dlrun.ranges: Min, Max, Parsed).
Constructors dlrun cannot annotate (torch's, the engine's Trainer) get their ranges from EXTERNAL_RANGES.
Resolving a `_target_` imports its module (torch, for most); dlrun.signature_cache keeps what the check
reads of it, so that a target checked before on this machine is checked again without importing it.
Annotations are checked in their normalised form (signature_cache.shape_of), cached or not.
"""

from typing import Annotated, Literal

from omegaconf import DictConfig, OmegaConf

from dlrun.errors import DlrunError, first_line
from dlrun.ranges import Max, Min, OneOf, Parsed
from dlrun.signature_cache import (
    ANY,
    NONE,
    AnnotatedShape,
    ClassShape,
    LiteralShape,
    Signature,
    SignatureCache,
    UnionShape,
    read_signature,
    shape_of,
    value_type,
)

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
PLAIN_SHAPES = {path: shape_of(annotation) for path, annotation in PLAIN_KEYS.items()}

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
        "precision": (Parsed("dlrun.precision_names:parse"),),
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
    for path, shape in PLAIN_SHAPES.items():
        value = OmegaConf.select(cfg, path, default=_ABSENT)
        if OmegaConf.is_config(value):  # a list (init_skip) is checked as the plain list it holds
            value = OmegaConf.to_container(value, resolve=True)
        if value is not _ABSENT:
            _check_value(path, value, shape, "", ())
    cache = SignatureCache()
    try:
        for group in GROUPS:
            node = OmegaConf.select(cfg, group, default=None)
            if node is None:
                continue
            tree = OmegaConf.to_container(node, resolve=True)
            if isinstance(tree, dict):
                _check_node(cache, group, tree, NOT_ARGUMENTS.get(group, set()))
    finally:
        cache.save()


def _check_node(cache: SignatureCache, path: str, node: dict, skip=()) -> None:
    """A `_target_` node against its target's signature; nested nodes on their own."""
    target = node.get("_target_")
    if target is None:
        for key, value in node.items():
            if isinstance(value, dict):
                _check_node(cache, f"{path}.{key}", value)
        return
    signature = _signature(cache, path, target)
    ranges = _external_ranges(target)
    for key, value in node.items():
        key_path = f"{path}.{key}"
        if key.startswith("_") or key in skip:
            continue
        if isinstance(value, dict):
            _check_node(cache, key_path, value)
        if key not in signature.params:
            if signature.takes_kwargs:
                continue
            allowed = ", ".join(name for name in signature.params if name not in ("self", "params"))
            raise DlrunError(f"{key_path} is not an argument of {target}; it takes: {allowed}")
        if value == "???":  # filled in at run time (data.model_kwargs)
            continue
        if value is None and key in signature.none_default:
            continue
        shape = signature.hints.get(key, ANY)
        _check_value(key_path, value, shape, f"{key} of {target} ", ranges.get(key, ()))


def _check_value(key_path: str, value, shape, whose: str, extra_ranges: tuple) -> None:
    def reject(allowed: str):
        shown = "null" if value is None else value
        raise DlrunError(f"{key_path}={shown} is not allowed: {whose}must be {allowed}")

    if isinstance(value, dict) and "_target_" in value:
        return  # instantiated from its own node
    if not _fits(value, shape):
        reject(_describe(shape))
    if value is None:
        return
    for rule in (*_metadata(shape, value), *extra_ranges):
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


def _signature(cache: SignatureCache, path: str, target: str) -> Signature:
    signature = cache.get(target)
    if signature is not None:
        return signature
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's _target_
        raise DlrunError(f"{path}._target_={target} cannot be imported: {first_line(err)}") from None
    signature = read_signature(obj)
    cache.put(target, signature, obj)
    return signature


def _external_ranges(target: str) -> dict[str, tuple]:
    ranges: dict[str, tuple] = {}
    for prefix, table in EXTERNAL_RANGES.items():
        if target == prefix or (prefix.endswith(".") and target.startswith(prefix)):
            ranges = table | ranges  # the longer (earlier) prefix wins
    return ranges


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fits(value, shape) -> bool:
    """Whether a config value (a YAML scalar, list or dict) fits an annotation's shape."""
    if isinstance(shape, AnnotatedShape):
        return _fits(value, shape.base)
    if isinstance(shape, UnionShape):
        return any(_fits(value, member) for member in shape.members)
    if isinstance(shape, LiteralShape):
        return any(value == v and type(value) is type(v) for v in shape.values)
    if shape == NONE:
        return value is None
    if not isinstance(shape, ClassShape) or (isinstance(value, dict) and "_target_" in value):
        return True
    kind = value_type(value)
    return kind is None or kind in shape.accepts


def _metadata(shape, value) -> list:
    """The Annotated metadata that applies to `value` (in a union: of the member it fits)."""
    if isinstance(shape, AnnotatedShape):
        return list(shape.rules) + _metadata(shape.base, value)
    if isinstance(shape, UnionShape):
        for member in shape.members:
            if _fits(value, member):
                return _metadata(member, value)
    return []


def _describe(shape) -> str:
    if isinstance(shape, AnnotatedShape):
        return " ".join([_describe(shape.base), *(str(rule) for rule in shape.rules)])
    if isinstance(shape, UnionShape):
        return " or ".join(_describe(member) for member in shape.members)
    if isinstance(shape, LiteralShape):
        return "one of " + ", ".join(str(v) for v in shape.values)
    if shape == NONE:
        return "null"
    return shape.name if isinstance(shape, ClassShape) else "Any"


# trainer.device without importing torch (engine/device.py checks it against the hardware later).
def device_spec(value) -> None:
    spec = str(value)
    kind, _, index = spec.partition(":")
    if kind not in ("auto", "cpu", "cuda", "mps") or (index and not (kind == "cuda" and index.isdigit())):
        raise ValueError("one of auto, cpu, cuda, cuda:N, mps")
