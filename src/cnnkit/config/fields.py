"""What a config key is: a dataclass field whose metadata says what it means, the values it
allows (a :class:`Range` or choices) and what resuming and tuning may do with it
(:func:`setting`), and how a written value becomes the key's type (:func:`coerce`)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cnnkit.errors import ConfigError, did_you_mean

# What a change to a key does to a run that resumes (cnnkit train --resume RUN key=value).
FREE = "free"  # moves nothing but where data is read from, or what is drawn at the end
FORCE = "force"  # changes the rest of training: allowed with --force, recorded in run.json
FIXED = "fixed"  # the checkpoint depends on it: never (train a new run instead)
RESUME_RULES = {
    FREE: "may change",
    FORCE: "may change with `--force` (recorded in run.json)",
    FIXED: "may not change (the checkpoint depends on it)",
}


@dataclass(frozen=True)
class Range:
    """The values a numeric key takes: ``low``..``high``, either end open or closed, and
    optionally 0 beside them (as "off" or "automatic"). Every number in a config has one, so that
    no value a run cannot use (5 for a probability, inf for a rate) is saved into a run."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    zero: str = ""  # what 0 means, where 0 is allowed outside [low, high]

    def __contains__(self, value: float) -> bool:
        if self.zero and value == 0:
            return True
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return bool(above and below)

    def __str__(self) -> str:
        def number(x: float) -> str:
            return f"{x:,.0f}" if x == int(x) and abs(x) >= 1000 else f"{x:g}"

        text = (
            f"{'(' if self.low_open else '['}{number(self.low)}, "
            f"{number(self.high)}{')' if self.high_open else ']'}"
        )
        if not self.zero:
            return f"in {text}"
        if 0 in Range(self.low, self.high, self.low_open, self.high_open):
            return f"in {text} (0: {self.zero})"
        return f"0 ({self.zero}) or in {text}"


def within(
    low: float, high: float, low_open: bool = False, high_open: bool = False, zero: str = ""
) -> Range:
    return Range(low, high, low_open, high_open, zero)


def setting(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    allowed: Range | tuple[str, ...] | None = None,
    resume: str = FORCE,
    search: bool = True,
    factory: Any = None,
) -> Any:
    """A config field and its metadata: ``doc`` (what the key means, for the reference and
    ``cnnkit config``), ``allowed`` (a :class:`Range` or the choices), ``resume`` (FREE, FORCE
    or FIXED) and ``search`` (whether a ``cnnkit tune`` space may vary it)."""
    metadata: dict[str, Any] = {"doc": " ".join(doc.split()), "resume": resume, "search": search}
    if isinstance(allowed, Range):
        metadata["range"] = allowed
    elif allowed is not None:
        metadata["choices"] = tuple(allowed)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def check_ranges(section: Any, prefix: str) -> None:
    """Every field of ``section`` with a range holds a value inside it."""
    for f in dataclasses.fields(section):
        allowed = f.metadata.get("range")
        value = getattr(section, f.name)
        if allowed is not None and value not in allowed:
            raise ConfigError(f"config key '{prefix}{f.name}' must be {allowed}, got {value!r}")


def coerce(key: str, value: Any, hint: Any, choices: tuple[str, ...] | None) -> Any:
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"config key {key!r} needs a {hint.__name__}, got nothing")
    result: Any
    if hint is bool:
        result = _to_bool(key, value)
    elif hint is int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or int(value) != value
        ):
            raise _type_error(key, value, "a whole number")
        result = int(value)
    elif hint is float:
        result = as_number(value)
        if result is None:
            raise _type_error(key, value, "a number")
    elif hint is str:
        if isinstance(value, Mapping | list):
            raise _type_error(key, value, "a string")
        result = str(value)
    else:  # pragma: no cover - a field type this module does not know
        raise TypeError(f"unsupported config type {hint!r} for {key}")
    if choices is not None and result not in choices:
        raise ConfigError(
            f"config key {key!r} must be one of {', '.join(choices)}, got {result!r}"
            f"{did_you_mean(str(result), choices) if isinstance(result, str) else ''}"
        )
    return result


def as_number(value: Any) -> float | None:
    """``value`` as a number key holds it: an int, a float, or a string that reads as one
    (YAML 1.1 reads ``1e-4`` as a string); None for anything else, true and false included."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _type_error(key, value, "true or false")


def _type_error(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config key {key!r} needs {expected}, got {value!r}")


def flatten(
    values: Mapping[str, Any],
    prefix: str = "",
    is_value: Callable[[Mapping[Any, Any]], bool] | None = None,
) -> dict[str, Any]:
    """A nested config (or a part of one) as dotted keys; ``model.params`` holds one key per
    parameter (``model.params.dropout``), or ``model.params: {}`` when there is none.
    ``is_value``: which mappings are values rather than sections (a search space's ranges)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if not isinstance(value, Mapping) or (is_value is not None and is_value(value)):
            flat[dotted] = value
        elif dotted == "model.params":
            if not value:
                flat[dotted] = {}
            for name, item in value.items():
                flat[f"{dotted}.{name}"] = item
        elif dotted.startswith("model.params."):
            flat[dotted] = value
        else:
            flat.update(flatten(value, f"{dotted}.", is_value))
    return flat
