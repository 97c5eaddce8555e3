"""Typed, strict conversion of YAML mappings into dataclasses: every mistake a ``SuiteError`` naming the field
and what is allowed."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, Optional, Union

from bench.errors import SuiteError  # noqa: F401  (raised here, caught by the command line)


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None)) + " or null"
    if origin in (list, tuple):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def convert_value(value: Any, tp, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert_value(value, arg, where)
            except SuiteError:
                pass
        raise SuiteError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise SuiteError(f"{where}: {value!r} is not allowed; choose {_type_name(tp)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise SuiteError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        items = [convert_value(v, typing.get_args(tp)[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if not isinstance(value, bool):
            raise SuiteError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SuiteError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SuiteError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SuiteError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported field type {tp} at {where}")


def fields_of(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def check_keys(mapping: dict, allowed: set[str], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            shown = key if isinstance(key, str) and key.isprintable() and key.strip() else repr(key)
            raise SuiteError(f"{where}.{shown}: unknown key; allowed: {', '.join(sorted(allowed))}")


def build_dataclass(cls, mapping: dict, where: str, base: Optional[dict] = None):
    """Instantiates dataclass ``cls`` from the keys of ``mapping`` it declares (defaults from ``base``,
    then the class). Range checks live in the dataclasses' ``__post_init__``; their ValueErrors come
    back as SuiteErrors with the field's path."""
    types = fields_of(cls)
    values = dict(base or {})
    for key, value in mapping.items():
        if key in types:
            values[key] = convert_value(value, types[key], f"{where}.{key}")
    try:
        return cls(**values)
    except ValueError as e:
        raise SuiteError(f"{where}.{e}") from None


def as_mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SuiteError(f"{where}: expected a mapping, got {value!r}")
    return value
