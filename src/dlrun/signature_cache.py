"""What dlrun.config_check needs of a `_target_`, kept on disk so that checking it again needs no import.

Resolving a target imports its module (torch, for most: ~2-3 s). What the check reads of it is small: the
parameter names, which default to None, whether it takes **kwargs, and each annotation as a Shape (below).
One JSON file under $DLRUN_CACHE_DIR (else $XDG_CACHE_HOME/dlrun, else ~/.cache/dlrun) keeps that per target,
with the files the target is defined in (its module's and its `__init__`'s) and their mtime and size: a stat()
of those says whether the entry still holds (a new torch, an edited model). A cache that cannot be read or
written is no cache: the check imports, as without one.
"""

import importlib.util
import inspect
import json
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, Union

from dlrun.atomic import replacing
from dlrun.ranges import Max, Min, OneOf, Parsed

FORMAT = 1
FILE_NAME = "signatures.json"


# An annotation as the check sees it. A plain class is the set of YAML value types it accepts: whether a
# value fits it depends on the value's type alone.
@dataclass(frozen=True)
class AnyShape:
    pass


@dataclass(frozen=True)
class NoneShape:
    pass


@dataclass(frozen=True)
class LiteralShape:
    values: tuple


@dataclass(frozen=True)
class UnionShape:
    members: tuple


@dataclass(frozen=True)
class AnnotatedShape:
    base: Any
    rules: tuple


@dataclass(frozen=True)
class ClassShape:
    name: str
    accepts: frozenset


ANY, NONE = AnyShape(), NoneShape()

# One value of each type a config value can have (OmegaConf.to_container of a YAML tree).
SAMPLES = {"null": None, "bool": True, "int": 1, "float": 1.5, "str": "s", "list": [], "dict": {}}


def value_type(value) -> str | None:
    """The SAMPLES name of a config value's type; None for a type no YAML value has."""
    if isinstance(value, tuple):
        return "list"
    for name, sample in SAMPLES.items():
        if type(value) is type(sample):
            return name
    return None


def shape_of(annotation) -> Any:
    """The Shape of a type annotation."""
    if annotation is Any or isinstance(annotation, (typing.TypeVar, str)):
        return ANY
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return AnnotatedShape(shape_of(args[0]), tuple(annotation.__metadata__))
    if origin in (Union, types.UnionType):
        return UnionShape(tuple(shape_of(arg) for arg in args))
    if origin is Literal:
        return LiteralShape(args)
    if annotation is None or annotation is type(None):
        return NONE
    kind = origin or annotation
    if not isinstance(kind, type):
        return ANY  # Callable[...], Protocols, ...: nothing a YAML scalar can be checked against
    name = getattr(annotation, "__name__", str(annotation).replace("typing.", ""))
    accepts = frozenset(key for key, sample in SAMPLES.items() if _class_accepts(kind, origin, sample))
    return ClassShape(name, accepts)


def _class_accepts(kind: type, origin, value) -> bool:
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


@dataclass(frozen=True)
class Signature:
    params: tuple  # parameter names, in order
    none_default: frozenset  # those whose default is None
    takes_kwargs: bool
    hints: dict  # parameter name -> Shape


def read_signature(obj) -> Signature:
    """The Signature of a class or callable (imported already)."""
    func = obj.__init__ if inspect.isclass(obj) else obj
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return Signature((), frozenset(), True, {})
    params = signature.parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable forward references: fall back to what is there
        hints = {k: p.annotation for k, p in params.items() if not isinstance(p.annotation, str)}
    hints = {k: shape_of(v) for k, v in hints.items() if v is not inspect.Parameter.empty and k != "return"}
    none_default = frozenset(k for k, p in params.items() if p.default is None)
    return Signature(tuple(params), none_default, takes_kwargs, hints)


def source_files(obj) -> list[str] | None:
    """The files `obj` and its `__init__` are defined in; None when they cannot be told."""
    files = []
    for item in (obj, obj.__init__ if inspect.isclass(obj) else None):
        try:
            files.append(os.path.abspath(inspect.getfile(inspect.unwrap(item))))
        except (TypeError, OSError):  # a builtin: object.__init__, a C extension's class
            if item is obj:
                return None
    return sorted(set(files))


# JSON: a Shape as a list headed by its kind; a rule likewise. Anything else is not cached.
class Uncacheable(Exception):
    pass


def _scalars(values) -> list:
    if not all(v is None or isinstance(v, (bool, int, float, str)) for v in values):
        raise Uncacheable(values)
    return list(values)


def _encode_rule(rule) -> list:
    if isinstance(rule, (Min, Max)) and isinstance(rule.bound, (int, float)):
        return [type(rule).__name__.lower(), rule.bound, rule.exclusive]
    if isinstance(rule, OneOf):
        return ["one_of", _scalars(rule.values)]
    if isinstance(rule, Parsed):
        return ["parsed", rule.parser]
    raise Uncacheable(rule)


def _decode_rule(data: list):
    kind, *rest = data
    if kind == "one_of":
        return OneOf(*rest[0])
    return {"min": Min, "max": Max, "parsed": Parsed}[kind](*rest)


def encode(shape) -> list:
    if isinstance(shape, AnnotatedShape):
        return ["annotated", encode(shape.base), [_encode_rule(r) for r in shape.rules]]
    if isinstance(shape, UnionShape):
        return ["union", [encode(m) for m in shape.members]]
    if isinstance(shape, LiteralShape):
        return ["literal", _scalars(shape.values)]
    if isinstance(shape, ClassShape):
        return ["class", shape.name, sorted(shape.accepts)]
    return ["none"] if shape == NONE else ["any"]


def decode(data: list):
    kind = data[0]
    if kind == "annotated":
        return AnnotatedShape(decode(data[1]), tuple(_decode_rule(r) for r in data[2]))
    if kind == "union":
        return UnionShape(tuple(decode(m) for m in data[1]))
    if kind == "literal":
        return LiteralShape(tuple(data[1]))
    if kind == "class":
        return ClassShape(data[1], frozenset(data[2]))
    return NONE if kind == "none" else ANY


def cache_dir() -> Path:
    if os.environ.get("DLRUN_CACHE_DIR"):
        return Path(os.environ["DLRUN_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "dlrun"
    return Path.home() / ".cache" / "dlrun"


def _stamp(path: str) -> list:
    stat = os.stat(path)
    return [path, stat.st_mtime_ns, stat.st_size]


def _key(target: str) -> str | None:
    """The target and where its top-level package lives (found without importing it): the same target
    from another checkout or environment is another entry."""
    try:
        spec = importlib.util.find_spec(target.split(".")[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    where = spec.origin or ",".join(spec.submodule_search_locations or ())
    return f"{target} {where}"


def _present(entry) -> bool:
    try:
        return all(os.path.exists(path) for path, _, _ in entry["files"])
    except (TypeError, KeyError, ValueError):
        return False


class SignatureCache:
    """The cache file, read once; save() writes it back if put() added entries."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / FILE_NAME
        self.entries: dict | None = None
        self.changed = False

    def _load(self) -> dict:
        if self.entries is None:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                data = None
            fresh = isinstance(data, dict) and data.get("format") == FORMAT
            self.entries = data["entries"] if fresh and isinstance(data.get("entries"), dict) else {}
        return self.entries

    def get(self, target: str) -> Signature | None:
        key = _key(target)
        entry = self._load().get(key) if key else None
        if entry is None:
            return None
        try:
            if any(_stamp(path) != [path, mtime, size] for path, mtime, size in entry["files"]):
                return None
            hints = {name: decode(shape) for name, shape in entry["hints"].items()}
            return Signature(tuple(entry["params"]), frozenset(entry["none_default"]), entry["kwargs"], hints)
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None

    def put(self, target: str, signature: Signature, obj) -> None:
        """Keep `signature`, read from `obj`, unless something in it has no JSON form."""
        key, files = _key(target), source_files(obj)
        if key is None or files is None:
            return
        try:
            entry = {
                "files": [_stamp(path) for path in files],
                "params": list(signature.params),
                "none_default": sorted(signature.none_default),
                "kwargs": signature.takes_kwargs,
                "hints": {name: encode(shape) for name, shape in signature.hints.items()},
            }
        except (Uncacheable, OSError):
            return
        self._load()[key] = entry
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        # Entries of files gone (a test's temporary module, an uninstalled package) would only pile up.
        self.entries = {key: entry for key, entry in self.entries.items() if _present(entry)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with replacing(self.path) as tmp:
                tmp.write_text(json.dumps({"format": FORMAT, "entries": self.entries}))
        except OSError:
            pass
        self.changed = False
