"""Typed, frozen configuration.

Each service declares a frozen dataclass. `load_config` builds it from a flat mapping of strings
(command-line `--set key=value`, environment), converting each value to the field's type and
refusing keys the dataclass does not declare, so a typo fails at start instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def _convert(name: str, raw: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw in (None, "", "none", "None"):
            return None
        return _convert(name, raw, args[0])
    if not isinstance(raw, str):
        return raw
    try:
        if annotation is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if annotation in (int, float, Decimal, str):
            return annotation(raw)
        if origin is tuple:
            (item,) = {a for a in typing.get_args(annotation) if a is not Ellipsis}
            return tuple(_convert(name, part.strip(), item) for part in raw.split(",") if part.strip())
    except (ValueError, ArithmeticError) as exc:
        raise ConfigError(f"config {name}: cannot read {raw!r} as {annotation}") from exc
    raise ConfigError(f"config {name}: unsupported type {annotation}")


def load_config(cls: type[T], values: Mapping[str, Any] | None = None) -> T:
    """Build `cls` from `values`, rejecting unknown keys and converting strings to field types."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown config keys {unknown}; known: {sorted(fields)}")
    converted = {name: _convert(name, raw, hints[name]) for name, raw in values.items()}
    return cls(**converted)


def env_values(cls: type, prefix: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Values for `cls` from variables PREFIX_FIELD (upper case); other variables are ignored."""
    environ = os.environ if environ is None else environ
    out = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}_{f.name.upper()}"
        if key in environ:
            out[f.name] = environ[key]
    return out


def parse_assignments(pairs: list[str] | None) -> dict[str, str]:
    """`["a=1", "b=x"]` -> `{"a": "1", "b": "x"}`."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {pair!r}")
        out[key.strip()] = value
    return out


def redact_url(url: str) -> str:
    """A database URL fit for a log line: any password replaced by ***."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
