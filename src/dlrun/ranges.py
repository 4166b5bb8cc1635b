"""Ranges a constructor declares for its arguments, read by dlrun.config_check before anything runs.

A parameter says what it allows in its annotation, through typing.Annotated:

    def __init__(self, batch_size: Annotated[int, Min(1)] = 128, lr: Annotated[float, Min(0)] = 0.1): ...

The type part is checked against the config value (int, float, str, bool, Literal[...], unions, None), the
metadata below against its range. Torch-free: data modules and the config check both import it.
"""

import importlib
from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Min:
    """value >= bound (value > bound with exclusive=True)."""

    bound: float
    exclusive: bool = False

    def allows(self, value) -> bool:
        return value > self.bound if self.exclusive else value >= self.bound

    def __str__(self) -> str:
        return f"{'>' if self.exclusive else '>='} {self.bound}"


@dataclass(frozen=True)
class Max:
    """value <= bound (value < bound with exclusive=True)."""

    bound: float
    exclusive: bool = False

    def allows(self, value) -> bool:
        return value < self.bound if self.exclusive else value <= self.bound

    def __str__(self) -> str:
        return f"{'<' if self.exclusive else '<='} {self.bound}"


class OneOf:
    """value is one of the given values."""

    def __init__(self, *values):
        self.values = values

    def allows(self, value) -> bool:
        return value in self.values

    def __str__(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)


@dataclass(frozen=True)
class Parsed:
    """The value must be accepted by a parser, given as "module:attribute" and imported only when checked;
    the parser raises ValueError saying what is allowed."""

    parser: str

    def check(self, value) -> str | None:
        """None when the value is accepted, else what is allowed."""
        module, attr = self.parser.split(":")
        parse = importlib.import_module(module)
        for part in attr.split("."):
            parse = getattr(parse, part)
        try:
            parse(value)
        except ValueError as err:
            return str(err)
        return None


BatchSize = Annotated[int, Min(1)]
OptionalBatchSize = Annotated[int, Min(1)] | None
