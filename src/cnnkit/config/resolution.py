"""Resolving a config: defaults < preset < YAML file < command-line ``key=value``, and the
changes a resume or a finished run's verbs may make to one. Config files are read strictly
(:func:`read_yaml`): no duplicate keys, no aliases, a size limit."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from cnnkit.config.fields import FIXED, FREE
from cnnkit.config.presets import DEFAULT_PRESET, PRESETS
from cnnkit.config.schema import (
    Config,
    build,
    check_key,
    flatten,
    resume_rule,
)
from cnnkit.errors import ConfigError, did_you_mean


def load_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: Iterable[str] = (),
) -> Config:
    """Resolve a config: defaults < preset < YAML file < ``key=value`` overrides.

    ``preset=None`` takes DEFAULT_PRESET (what `cnnkit train` uses); ``preset=""`` takes none.
    """
    flat = flatten(Config().to_dict())
    if preset is None:
        preset = DEFAULT_PRESET
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}{did_you_mean(preset, PRESETS)}")
        flat.update(PRESETS[preset])
        flat["name"] = preset
    if file is not None:
        for key, value in flatten(read_yaml(Path(file))).items():
            check_key(key)
            flat[key] = value
    for item in overrides:
        key, value = parse_override(item)
        flat[key] = value
    return build(Config, flat, prefix="")


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.epochs=3"`` -> ``("train.epochs", 3)``; the value is read as YAML."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"expected key=value, got {item!r} (for example train.epochs=10)")
    check_key(key)
    return key, parse_scalar(text)


def parse_scalar(text: str) -> Any:
    """A value as written on a command line or in a space file: a number where it reads as one
    (``1e-4`` too, which YAML 1.1 reads as a string), else what YAML makes of it."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


# ----------------------------------------------------------------------------- changing a run


def resume_config(
    config: Config, overrides: Iterable[str], force: bool = False
) -> tuple[Config, dict[str, Any]]:
    """``config`` with a resume's ``key=value`` overrides applied, and the keys that changed
    something the checkpoint was trained with (what run.json records).

    What each key allows is the schema's (:func:`~cnnkit.config.schema.resume_rule`): FREE keys
    may always change, FIXED ones never, and any other change (such as ``train.epochs`` to
    train longer) needs ``force``.
    """
    changes = dict(parse_override(item) for item in overrides)
    current = flatten(config.to_dict())
    changed = {k: v for k, v in changes.items() if resume_rule(k) != FREE and current.get(k) != v}
    fixed = [k for k in changed if resume_rule(k) == FIXED]
    if fixed:
        raise ConfigError(
            f"{', '.join(fixed)} cannot change on resume (the checkpoint depends on it); "
            f"train a new run with the new setting instead"
        )
    if changed and not force:
        listed = ", ".join(f"{k}: {current.get(k)!r} -> {v!r}" for k, v in changed.items())
        raise ConfigError(
            f"resume keeps the run's config, and this would change it ({listed}); "
            f"add --force to change it anyway (the change is recorded in run.json)"
        )
    return config.replace(**changes), changed


def with_data_overrides(config: Config, overrides: Iterable[str], verb: str) -> Config:
    """``config`` with ``data.*`` overrides only (where a run's data is on this machine), for the
    verbs that read a finished run (evaluate, report)."""
    changes = dict(parse_override(item) for item in overrides)
    for key in changes:
        if not key.startswith("data."):
            raise ConfigError(
                f"{verb} takes data.* overrides only (such as data.path), not {key!r}"
            )
    if changes.get("data.name", config.data.name) != config.data.name:
        # Another source: the run's data.path was where the old one lived, not this one.
        changes.setdefault("data.path", None)
    return config.replace(**changes)


MAX_YAML_BYTES = 1_000_000  # a config is a few hundred bytes; anything this large is not one


class _StrictLoader(yaml.SafeLoader):
    """YAML as a person writes a config: a key given twice, or an alias (``*name``, which can
    make a small file expand into a huge one), is an error rather than silently resolved."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(
                f"{self.name}, line {mark.line + 1}: YAML aliases (*name) are not allowed "
                f"in a config; write the value out"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and key in seen:
                raise ConfigError(
                    f"{self.name}, line {line}: {key!r} is given twice (first on line "
                    f"{seen[key]}); merge the two into one"
                )
            if isinstance(key, str | int | float | bool):
                seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file holding a mapping (``what`` names it in errors): strict (no duplicate keys,
    no aliases), at most MAX_YAML_BYTES, every failure a ConfigError."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
        if len(data) > MAX_YAML_BYTES:
            raise ConfigError(
                f"{what} {path} is larger than {MAX_YAML_BYTES:,} bytes; not a config"
            )
        loader = _StrictLoader(data.decode("utf-8"))
        loader.name = str(path)
        try:
            loaded = loader.get_single_data()
        finally:
            loader.dispose()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder, not a YAML file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{what} {path} is not readable YAML: {reason}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of keys, not {type(loaded).__name__}")
    return loaded
