"""Typed, frozen configuration: defaults < preset < YAML file < command-line ``key=value``.

Every run saves its resolved config as ``config.yaml``; :func:`load_config` and
:meth:`Config.from_dict` turn such a file back into the same object. Unknown keys and wrong
types are :class:`~cnnkit.errors.ConfigError` naming the closest valid key.

- :mod:`cnnkit.config.fields`: what a key is (its metadata, its allowed values, coercion);
- :mod:`cnnkit.config.schema`: the sections and their keys, each with what it means, the values
  it allows, and what resuming and tuning may do with it;
- :mod:`cnnkit.config.reference`: every key as data, for the site's reference;
- :mod:`cnnkit.config.presets`: the named recipes (``--preset``);
- :mod:`cnnkit.config.resolution`: loading, overrides, config files, and the changes a resume
  may make.

This package imports nothing heavy: ``cnnkit config`` answers without TensorFlow.
"""

from __future__ import annotations

from cnnkit.config.fields import FIXED, FORCE, FREE, Range, as_number, flatten
from cnnkit.config.presets import DEFAULT_PRESET, PRESETS, list_presets
from cnnkit.config.reference import KeyInfo, describe_keys
from cnnkit.config.resolution import (
    load_config,
    parse_override,
    parse_scalar,
    read_yaml,
    resume_config,
    with_data_overrides,
)
from cnnkit.config.schema import (
    MANY,
    RUN_NAME,
    AugmentConfig,
    Config,
    DataConfig,
    ModelConfig,
    ReportConfig,
    TrainConfig,
    check_key,
    key_range,
    key_type,
    monitor_mode,
    resume_rule,
    searchable,
    valid_keys,
)

__all__ = [
    "DEFAULT_PRESET",
    "FIXED",
    "FORCE",
    "FREE",
    "MANY",
    "PRESETS",
    "RUN_NAME",
    "AugmentConfig",
    "Config",
    "DataConfig",
    "KeyInfo",
    "ModelConfig",
    "Range",
    "ReportConfig",
    "TrainConfig",
    "as_number",
    "check_key",
    "describe_keys",
    "flatten",
    "key_range",
    "key_type",
    "list_presets",
    "load_config",
    "monitor_mode",
    "parse_override",
    "parse_scalar",
    "read_yaml",
    "resume_config",
    "resume_rule",
    "searchable",
    "valid_keys",
    "with_data_overrides",
]
