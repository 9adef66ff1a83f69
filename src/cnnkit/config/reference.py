"""The configuration's reference, as data: every key with all that the schema and the presets
know of it (:func:`describe_keys`). The site's configuration page is generated from it."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from cnnkit.config.fields import FORCE, RESUME_RULES
from cnnkit.config.presets import PRESETS
from cnnkit.config.resolution import load_config
from cnnkit.config.schema import Config, field_types, fields_by_key, key_type


@dataclass(frozen=True)
class KeyInfo:
    """All that the schema knows of one key (the configuration reference is made of these)."""

    key: str
    section: str  # "" for the top level
    section_doc: str
    type: str
    default: Any
    presets: dict[str, Any]  # the value each preset gives it
    allowed: str
    resume: str  # FREE, FORCE or FIXED
    searchable: bool
    doc: str

    @property
    def anchor(self) -> str:
        """The id of its entry on the reference page (``train.budget``: ``train-budget``)."""
        return self.key.replace(".", "-").replace("_", "-").lower()

    @property
    def resume_text(self) -> str:
        return RESUME_RULES[self.resume]

    @staticmethod
    def shown(value: Any) -> str:
        if value is None:
            return "none"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, dict):
            return "{}" if not value else ", ".join(f"{k}={v}" for k, v in value.items())
        return str(value) if value != "" else '""'


def describe_keys() -> list[KeyInfo]:
    """Every key of the schema, in its order, with its metadata and each preset's value."""
    defaults = Config()
    presets = {name: load_config(name) for name in PRESETS}
    infos = []
    for key, (cls, f) in fields_by_key().items():
        hint = field_types(cls)[f.name]
        optional = type(None) in typing.get_args(hint)
        base = key_type(key)
        type_name = "mapping" if base is None else _TYPE_NAMES[base]
        if optional:
            type_name += " or none"
        choices = f.metadata.get("choices")
        allowed = (
            "one of " + ", ".join(f"`{c}`" for c in choices) if choices
            else str(f.metadata["range"]) if "range" in f.metadata
            else {"true/false": "true or false", "mapping": "the model's parameters"}.get(
                type_name, "any " + type_name
            )
        )  # fmt: skip
        section = key.rpartition(".")[0]
        infos.append(
            KeyInfo(
                key=key,
                section=section,
                section_doc=" ".join((cls.__doc__ or "").split()),
                type=type_name,
                default=_value(defaults, key),
                presets={name: _value(config, key) for name, config in presets.items()},
                allowed=allowed,
                resume=str(f.metadata.get("resume", FORCE)),
                searchable=bool(f.metadata.get("search", True)),
                doc=str(f.metadata.get("doc", "")),
            )
        )
    return infos


_TYPE_NAMES = {bool: "true/false", int: "whole number", float: "number", str: "text"}


def _value(config: Config, key: str) -> Any:
    """``key``'s value in ``config`` (``model.params``: the whole mapping)."""
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value
