"""Building blocks of the parameter schema: strict blocks, library-backed defaults, ranges.

Every parameters block is a :class:`Block`: a pydantic model that is strict (``1.0`` is not an
integer, ``"yes"`` is not true/false, a number is never NaN) and forbids unknown keys, so a
misspelt key is an error instead of a silently ignored setting. Ranges are declared with
:class:`Interval` and :class:`Span` annotations; they validate and they also write the
"allowed" column of docs/parameters.md, so the two cannot disagree.

A block that feeds a library dataclass (``EncoderConfig``, ``TrainConfig``, ...) is a
:class:`LibraryBlock`: its defaults are read from that dataclass, so the schema and the library
never disagree on what an absent key means.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError, PydanticUndefined, core_schema


class BlockProblems(ValueError):
    """Cross-field rules broken inside one block: ``problems`` = [(key, message), ...]."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in problems))
        self.problems = problems


class Block(BaseModel):
    """A parameters block: strict types, unknown keys rejected, cross-field rules in
    :meth:`problems` (all of a block's broken rules are reported together)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, message) for every cross-field rule of this block that the values break."""
        return iter(())

    @model_validator(mode="after")
    def _check_rules(self) -> Block:
        found = list(self.problems())
        if found:
            raise BlockProblems(found)
        return self

    def given(self, key: str) -> bool:
        """Whether ``key`` was set in the parameters (not filled in from a default)."""
        return key in self.model_fields_set


def sub_block(description: str = "") -> Any:
    """A nested block field: absent = the block with all its defaults."""
    return Field(default_factory=dict, validate_default=True, description=description)


def _plain(value: Any) -> Any:
    """A library default as parameters would spell it: tuples as lists, dataclasses as dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def library_defaults(library: type) -> dict[str, Any]:
    """The defaults of dataclass ``library``'s init fields (fields without one are left out)."""
    out = {}
    for f in dataclasses.fields(library):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = _plain(f.default_factory())
    return out


class LibraryBlock(Block):
    """A block that configures library dataclass ``library``: a key's default is the
    dataclass's default (set on the subclass, once, when it is defined)."""

    library: ClassVar[type | None] = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.library is None:
            return
        defaults = library_defaults(cls.library)
        for name, info in cls.model_fields.items():
            if name not in defaults:
                continue
            value = defaults[name]
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                # a nested block: the library's default values, validated as that block
                info.default = PydanticUndefined
                info.default_factory = partial(info.annotation.model_validate, value)
            else:
                info.default_factory = None
                info.default = value
        cls.model_rebuild(force=True)


# ----------------------------------------------------------------------------- value checks


def _fmt(x: float | None, infinity: str) -> str:
    return infinity if x is None else repr(x)


class ValueCheck:
    """A check pydantic runs on a value after its type check: ``Annotated[T, <check>]``."""

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        return core_schema.no_info_after_validator_function(self.check, handler(source))


@dataclass(frozen=True)
class Interval(ValueCheck):
    """``low <= value <= high`` (``None`` = unbounded; ``*_open`` excludes the end point).
    On a list it checks every item."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __str__(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"{left}{_fmt(self.low, '-inf')}, {_fmt(self.high, 'inf')}{right}"

    def __contains__(self, x: float) -> bool:
        if self.low is not None and (x < self.low or (self.low_open and x == self.low)):
            return False
        return self.high is None or not (x > self.high or (self.high_open and x == self.high))

    def check(self, value: Any) -> Any:
        if value is not None and value not in self:
            raise PydanticCustomError("interval", f"{value!r} is outside {self}")
        return value


@dataclass(frozen=True)
class Span(ValueCheck):
    """A ``[low, high]`` pair with low <= high, both inside ``within``."""

    within: Interval = Interval()

    def check(self, value: list[float]) -> list[float]:
        if len(value) != 2:
            raise PydanticCustomError("span", f"{value!r} is not a [low, high] pair")
        if value[0] > value[1]:
            raise PydanticCustomError("span", f"{value!r}: low {value[0]} is above high {value[1]}")
        if value[0] not in self.within or value[1] not in self.within:
            raise PydanticCustomError("span", f"{value!r} is outside {self.within}")
        return value


@dataclass(frozen=True)
class Items(ValueCheck):
    """A list with at least ``min`` items and (with ``unique``) no repeated item."""

    min: int = 1
    unique: bool = True

    def check(self, value: list[Any]) -> list[Any]:
        if len(value) < self.min:
            raise PydanticCustomError("items", f"{value!r} has fewer than {self.min} item(s)")
        if self.unique and len({repr(v) for v in value}) != len(value):
            raise PydanticCustomError("items", f"{value!r} has duplicate entries")
        return value


def odd(value: int | None) -> int | None:
    """Odd kernel sizes keep 'same' padding symmetric."""
    if value is not None and value % 2 == 0:
        raise PydanticCustomError("odd", f"{value!r} is not odd")
    return value


def non_empty(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise PydanticCustomError("non_empty", f"{value!r} is an empty string")
    return value


# The value types used throughout the schema.
PositiveInt = Annotated[int, Interval(1)]
Count = Annotated[int, Interval(0)]  # also seeds: numpy's SeedSequence takes no negatives
Positive = Annotated[float, Interval(0, low_open=True)]
NonNegative = Annotated[float, Interval(0)]
Probability = Annotated[float, Interval(0, 1)]
Rate = Annotated[float, Interval(0, 1, high_open=True)]  # dropout, warmup share, Adam betas
Fraction = Annotated[float, Interval(0, 1, low_open=True)]  # a share of the data, (0, 1]
OddInt = Annotated[int, Interval(1), AfterValidator(odd)]
Text = Annotated[str, AfterValidator(non_empty)]
