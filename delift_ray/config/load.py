"""Reading a config: the YAML file, `--set key.sub=value` overrides, and coercion to the typed
dataclasses (unknown keys and wrongly typed values stop here, for every section)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from delift_ray.config.run import Config, sections_of, validate
from delift_ray.config.sections import check_choice, show
from delift_ray.errors import ConfigError, first_line


def load_config(
    path: str | Path | None, overrides: list[str] | None = None, command: str | None = None
) -> Config:
    """Read a YAML config, apply `key.sub=value` overrides, validate the sections `command` uses
    (all for None); raise ConfigError if bad."""
    raw = read_yaml(path) if path is not None else {}
    for item in overrides or []:
        apply_override(raw, item)
    cfg = build(Config, raw, "")
    validate(cfg, sections_of(command))
    return cfg


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds; ConfigError if it is missing or not one."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config: file not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"config: {p} is not UTF-8 text (byte {e.start})") from None
    except RecursionError:
        raise ConfigError(f"config: {p} is nested too deeply") from None
    except (yaml.YAMLError, ValueError) as e:  # ValueError: e.g. an int over Python's limit
        raise ConfigError(f"config: {p} is not valid YAML: {first_line(e)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config: {p} must hold a mapping at the top level")
    return loaded


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `key.sub=value` in raw, the value parsed as YAML (creating sections as needed)."""
    if "=" not in item:
        raise ConfigError(f"config: --set expects key=value, got {item!r}")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"config: --set has an empty key in {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"config: cannot set {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def build(cls: type, raw: Any, prefix: str) -> Any:
    """The dataclass `cls` from a mapping, each value coerced to its field's type."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"config: unknown key {prefix}{unknown[0]} (known keys: {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}") for k, v in raw.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"config: {key} has a bad value {show(value)}"
        )
    if origin is Literal:
        check_choice(key, value, typing.get_args(tp))
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, f"{key}.")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config: {key} must be a number, got {show(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"config: {key} must be a finite number, got {value}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config: {key} must be an integer, got {show(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config: {key} must be true or false, got {show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config: {key} must be a string, got {show(value)}")
        return value
    raise ConfigError(f"config: {key} has an unsupported type")  # pragma: no cover
