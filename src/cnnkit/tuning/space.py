"""A study's search space: a YAML file over the config's own keys, each a range or a list of
choices, checked against the config schema before anything is created.

Forms (keys dotted, or nested as in a config file)::

    train.learning_rate: {low: 1e-4, high: 1e-2, log: true}   # float, log scale
    train.batch_size: {low: 32, high: 256, step: 32}          # int (the key holds ints)
    train.optimizer: [adam, adamw, sgd]                       # choices
    model.params.dropout: {low: 0.0, high: 0.5}

Which keys may be searched is the schema's (:func:`cnnkit.config.searchable`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.config import Config, as_number, flatten, key_type, read_yaml, searchable
from cnnkit.errors import ConfigError, did_you_mean

SPEC_FIELDS = ("low", "high", "log", "step", "choices")


@dataclass(frozen=True)
class Param:
    """One dimension of a search space: a float or int range (optionally on a log scale or in
    steps), or a list of choices."""

    key: str
    kind: str  # "float", "int" or "categorical"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self) -> Any:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "categorical":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log,
                                   step=int(self.step or 1))  # fmt: skip
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "int" and int(value) != value:
            return False
        if self.step and not math.isclose((value - self.low) / self.step,
                                          round((value - self.low) / self.step)):  # fmt: skip
            return False
        return bool(self.low <= value <= self.high)

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"one of {', '.join(map(str, self.choices))}"
        scale = ", log scale" if self.log else f", step {self.step:g}" if self.step else ""
        return f"{self.kind} in [{self.low:g}, {self.high:g}]{scale}"


def read_space(path: str | Path, base: Config) -> tuple[Param, ...]:
    """The search space in a YAML file, checked against ``base`` (see :func:`parse_space`)."""
    path = Path(path)
    values = read_yaml(path, "space file")
    return parse_space(values, base, str(path))


def parse_space(
    values: Mapping[str, Any], base: Config, source: str = "space"
) -> tuple[Param, ...]:
    """A search space from its YAML form, every key and value checked against the config
    schema and ``base``: a ConfigError (``source: ...``, one line) for an unknown key (with the
    closest valid one), a range on a key that is not a number, a range or a choice that a config
    cannot hold, an empty range, or no parameter at all (forms: the module's docstring).
    """
    flat = flatten(values, is_value=_is_spec)
    if not flat:
        raise ConfigError(
            f"{source}: no parameter to search; give at least one, for example "
            f"'train.learning_rate: {{low: 1e-4, high: 1e-2, log: true}}'"
        )
    params = []
    for key, spec in flat.items():
        try:
            params.append(_parse_param(key, spec, base))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return tuple(params)


def _is_spec(value: Mapping[Any, Any]) -> bool:
    """A mapping that is a range (``{low: .., high: ..}``), not a section of keys (an empty one
    is a value too, refused as such)."""
    return not value or bool(set(map(str, value)) & set(SPEC_FIELDS))


def _parse_param(key: str, spec: Any, base: Config) -> Param:
    hint = key_type(key)  # an unknown key: the same "did you mean" as everywhere
    if key == "model.params":
        raise ConfigError(
            "model.params is searched one parameter at a time: model.params.NAME "
            "(cnnkit models lists each model's)"
        )
    if not searchable(key):
        raise ConfigError(
            f"{key} cannot be searched: it changes what the trials are compared on "
            f"(set it with --config or key=value instead)"
        )
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{key}: expected a range {{low: ..., high: ...}} or a list of choices, got {spec!r} "
            f"(a fixed value goes on the command line: {key}={spec})"
        )
    unknown = [str(f) for f in spec if f not in SPEC_FIELDS]
    if unknown:
        raise ConfigError(
            f"{key}: unknown field {unknown[0]!r}{did_you_mean(unknown[0], SPEC_FIELDS)}"
        )
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise ConfigError(f"{key}: give either choices or low/high, not both")
        return _choices(key, spec["choices"], base)
    return _range(key, spec, hint, base)


def _choices(key: str, choices: Any, base: Config) -> Param:
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{key}: choices must be a non-empty list")
    for choice in choices:
        if choice is not None and not isinstance(choice, bool | int | float | str):
            raise ConfigError(f"{key}: choice {choice!r} is not a number, string or true/false")
    values = [_check_value(key, choice, base) for choice in choices]
    if len({(type(v), v) for v in values}) != len(values):
        raise ConfigError(f"{key}: a choice is given twice")
    return Param(key, "categorical", choices=tuple(values))


def _range(key: str, spec: Mapping[str, Any], hint: type | None, base: Config) -> Param:
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{key}: a range needs both low and high")
    numbers: dict[str, float] = {}
    for name in ("low", "high", "step"):
        if name in spec:
            number = as_number(spec[name])
            if number is None:
                raise ConfigError(f"{key}: {name} must be a number, got {spec[name]!r}")
            numbers[name] = number
    low, high, step = numbers["low"], numbers["high"], numbers.get("step")
    if hint not in (int, float, None):
        kind = "true or false" if hint is bool else "a string"
        raise ConfigError(
            f"{key} holds {kind}, not a number: give a list of choices instead of a range"
        )
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"{key}: low and high must be finite numbers")
    integer = hint is int or (hint is None and all(
        float(v).is_integer() and not isinstance(v, float) for v in (spec["low"], spec["high"])
    ))  # fmt: skip
    if hint is int and not (low.is_integer() and high.is_integer()):
        raise ConfigError(
            f"{key} holds whole numbers: low and high must be whole, got {low:g}, {high:g}"
        )
    if low >= high:
        raise ConfigError(
            f"{key}: the range [{low:g}, {high:g}] is empty (low must be below high; "
            f"a fixed value goes on the command line: {key}={low:g})"
        )
    use_log = spec.get("log", False)
    if not isinstance(use_log, bool):
        raise ConfigError(f"{key}: log must be true or false, got {use_log!r}")
    if use_log and low <= 0:
        raise ConfigError(f"{key}: a log-scale range needs low > 0, got {low:g}")
    if step is not None:
        if use_log:
            raise ConfigError(f"{key}: give either log: true or a step, not both")
        if not step > 0 or (integer and not float(step).is_integer()):
            raise ConfigError(f"{key}: step must be a positive {'whole ' if integer else ''}number")
    for end in (low, high):
        _check_value(key, int(end) if integer else end, base)
    if integer:
        return Param(key, "int", int(low), int(high), use_log, int(step) if step else None)
    return Param(key, "float", low, high, use_log, step)


def _check_value(key: str, value: Any, base: Config) -> Any:
    """``value`` as ``key`` holds it in a config derived from ``base``; a ConfigError if none can."""
    if isinstance(value, str) and key_type(key) in (int, float):
        number = as_number(value)
        value = value if number is None else number
    config = base.replace(**{key: value})
    if key.startswith("model.params."):
        from cnnkit.models import check_hparams

        check_hparams(config.model.name, config.model.params)
    return flatten(config.to_dict())[key]


def suggest(trial: Any, param: Param) -> Any:
    """The value of ``param`` that the Optuna ``trial`` asks for."""
    if param.kind == "categorical":
        return trial.suggest_categorical(param.key, list(param.choices))
    if param.kind == "int":
        return trial.suggest_int(param.key, int(param.low), int(param.high),
                                 step=int(param.step or 1), log=param.log)  # fmt: skip
    return trial.suggest_float(param.key, param.low, param.high, step=param.step, log=param.log)
