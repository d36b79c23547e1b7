"""Config fields: one key's default, type, choices, range and list items, checked with one-line errors.

TensorFlow-free: the config module and every detector's spec (keras_ad/specs/) declare their keys
with `Field`, and `Field.check` is the one place a value is type- and range-checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from keras_ad.errors import ConfigError

AUTO = "auto"


@dataclass(frozen=True)
class Field:
    """One config key: its default, accepted type(s), allowed choices or numeric range."""

    default: Any
    kind: type | tuple = str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    allow: tuple = ()  # special literal values accepted besides `kind`, e.g. ("auto",)
    doc: str = ""
    items: Field | None = None  # a list value: the Field every item must pass
    length: int | None = None  # a list value: its required length

    def check(self, value, source, key):
        if value in self.allow:
            return value
        if isinstance(value, (list, tuple)) and self.items is not None and list in _kinds(self):
            if self.length is not None and len(value) != self.length:
                raise ConfigError(source, key, f"expected {self.length} items, got {list(value)!r}")
            return [self.items.check(item, source, f"{key}[{i}]") for i, item in enumerate(value)]
        kinds = _kinds(self)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kinds == (str,) and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a class folder called 3 given as --set data.normal_class=3
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(source, key, f"expected {_kind_name(self)}, got {value!r}")
        if not isinstance(value, kinds):
            raise ConfigError(source, key, f"expected {_kind_name(self)}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(source, key, f"must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every comparison below
            raise ConfigError(source, key, f"must be a finite number; got {value!r}")
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            raise ConfigError(source, key, f"must be in [{self.low}, {self.high}]; got {value!r}")
        return value


def _kinds(field) -> tuple:
    return field.kind if isinstance(field.kind, tuple) else (field.kind,)


def _kind_name(field):
    names = [k.__name__ for k in _kinds(field)] + [repr(a) for a in field.allow]
    if field.items is not None and field.length:
        names = [f"[{', '.join([field.items.kind.__name__] * field.length)}]" if n == "list" else n for n in names]
    return " or ".join(names)


OPTIONAL = (None,)


def size_field(default, doc, low=32, high=4096, allow=()) -> Field:
    """A size in pixels: one int (square) or [height, width]."""
    return Field(default, (int, list), low=low, high=high, allow=allow, doc=doc,
                 items=Field(None, int, low=low, high=high), length=2)


def as_shape(size) -> tuple[int, int]:
    """(height, width) of a size given as one int or [height, width]."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def shape_text(shape) -> str:
    return f"{shape[0]}x{shape[1]}" if shape[0] != shape[1] else str(shape[0])


def is_power_of_two(n: int) -> bool:
    return n > 0 and not n & (n - 1)


def positive_ints(doc: str, default, length=None) -> Field:
    """A list of positive integers (network widths)."""
    return Field(default, list, items=Field(None, int, low=1), length=length, doc=doc)
