"""Type and range checks of run settings, read from each ``RunSettings`` field's own annotation and metadata.

One function, ``check_value``, checks a value from any source (a TOML file, the environment, the command
line), so the same mistake gives the same one-line message naming the field and where it came from:

    pyproject.toml: temperature must be a number >= 0, got 'hot'
    command line: --top-p must be a number > 0 and <= 1, got 5.0

Range metadata on a field: ``ge``/``gt`` (lower bound, inclusive/exclusive), ``le`` (upper bound) and
``choices`` (allowed strings). The annotation gives the type: ``int``, ``float``, ``str``, ``bool``,
``Path``, each optionally ``| None``.
"""

from __future__ import annotations

import math
import typing
from dataclasses import Field
from pathlib import Path

from harness.core.errors import ConfigError

_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path (string)"}


def field_type(f: Field, owner: type) -> tuple[type | None, bool]:
    """(base type, whether None is allowed) from the field's annotation; base None for dict/list fields."""
    hint = typing.get_type_hints(owner)[f.name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if args:
        hint = next(a for a in args if a is not type(None))
    return (hint if hint in _TYPE_WORDS else None), optional


def expectation(f: Field, base: type) -> str:
    """``a number > 0 and <= 1``: the type and the range, in words."""
    meta = f.metadata
    if "choices" in meta:
        return "one of " + ", ".join(meta["choices"])
    bounds = [f"{op} {meta[key]}" for key, op in (("ge", ">="), ("gt", ">"), ("le", "<=")) if key in meta]
    return _TYPE_WORDS[base] + (" " + " and ".join(bounds) if bounds else "")


def check_value(f: Field, owner: type, value, *, label: str, source: str):
    """``value`` for field ``f`` (converted where lossless: an int for a float field, a str for a Path),
    or a ``ConfigError`` saying ``SOURCE: LABEL must be ..., got VALUE``."""
    base, optional = field_type(f, owner)
    if base is None or (value is None and optional):
        return value
    converted = _convert(base, value)
    meta = f.metadata
    ok = converted is not None and (
        "choices" not in meta or converted in meta["choices"]) and _in_range(converted, meta)
    if not ok:
        raise ConfigError(f"{source}: {label} must be {expectation(f, base)}, got {value!r}")
    return converted


def _convert(base: type, value):
    """The value as ``base``, or None when it is not one (bool is not an int here: ``limit = true`` is a slip)."""
    if base is bool:
        return value if isinstance(value, bool) else None
    if base is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None  # nan/inf (valid TOML) are no setting
    if base is str:
        return value if isinstance(value, str) and "\x00" not in value else None
    if base is Path:
        if isinstance(value, Path):
            return value
        return Path(value) if isinstance(value, str) and value and "\x00" not in value else None
    return value


def _in_range(value, meta) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return True
    return (("ge" not in meta or value >= meta["ge"]) and ("gt" not in meta or value > meta["gt"])
            and ("le" not in meta or value <= meta["le"]))
