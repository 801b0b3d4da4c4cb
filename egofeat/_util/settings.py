"""Typed settings: pydantic models read from TOML/YAML files and ``key.path=value`` overrides.

Every run kind of egofeat (extract, train, distill, X-MIC, ...) is one pydantic model. This
module holds the one way to fill such a model:

1. a ``--config FILE`` (``.toml``, ``.yaml``/``.yml``) gives a nested dict in the model's layout;
2. ``--set a.b=c`` overrides write into that dict; each value's text is read as the type of
   the field it sets (``none``/``null`` for optional fields, ``[..]`` JSON or ``a,b`` for
   sequences, plain text otherwise, which pydantic converts: ``1e-3``, ``true``, ``bf16``);
3. the model validates the result; a :class:`ConfigError` names the field path, the value and
   what was expected, in one line.

Typed values given by code (e.g. CLI options) are put into the dict as they are, never turned
into text and parsed back. A model with ``extra="allow"`` (a head's options) may define a
classmethod ``extra_field_types(values) -> {name: annotation}`` so its extra keys are typed too.
"""

from __future__ import annotations

import json
import os
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "apply_overrides",
    "build",
    "describe_errors",
    "field_annotation",
    "merge_settings",
    "read_settings_file",
    "set_path",
]

M = TypeVar("M", bound=BaseModel)
_NO_VALUE = ("none", "null")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says where and why."""


def read_settings_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The nested dict of a ``.toml`` / ``.yaml`` / ``.yml`` settings file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(path.read_text()) or {}
        else:
            raise ConfigError(f"{path}: config files are .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected tables of settings at the top level")
    return data


def merge_settings(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top: tables merge key by key, other values replace."""
    merged = {key: dict(value) if isinstance(value, Mapping) else value for key, value in base.items()}
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = dict(value) if isinstance(value, Mapping) else value
    return merged


def set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    """``raw[a][b] = value`` for ``path == "a.b"``, creating the tables on the way."""
    *tables, key = path.split(".")
    node = raw
    for table in tables:
        child = node.setdefault(table, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: {table!r} is a value, not a table of settings")
        node = child
    node[key] = value


def field_annotation(model: type[BaseModel], path: Iterable[str], raw: Mapping[str, Any]) -> Any:
    """The annotation of the field at ``path`` (keys) of ``model``, ``Any`` when unknown.

    ``raw`` is the dict being built: models with typed extras look at it (a head's options
    depend on the head's name).
    """
    annotation: Any = model
    node: Any = raw
    for key in path:
        submodel = _model_of(annotation)
        if submodel is None:
            return Any
        if key in submodel.model_fields:
            annotation = submodel.model_fields[key].annotation
        else:
            extra = getattr(submodel, "extra_field_types", None)
            annotation = extra(node if isinstance(node, Mapping) else {}).get(key, Any) if extra else Any
        node = node.get(key, {}) if isinstance(node, Mapping) else {}
    return annotation


def apply_overrides(
    model: type[BaseModel], raw: Mapping[str, Any], overrides: Iterable[str]
) -> dict[str, Any]:
    """A copy of ``raw`` with ``a.b=value`` overrides applied, each value read as its field's type.

    All overrides are placed before any is typed, so an option's type may depend on another
    override (``head.name=tsm`` with ``head.width=64``).
    """
    result = json.loads(json.dumps(raw, default=str)) if raw else {}
    parsed = []
    for text in overrides:
        target, sep, value = text.partition("=")
        if not sep or not target.strip() or "." not in target and model_has_tables(model):
            raise ConfigError(
                f"override {text!r}: write overrides as table.key=value, e.g. trainer.epochs=5"
            )
        parsed.append((target.strip(), value.strip(), text))
    for target, value, _ in parsed:
        set_path(result, target, value)
    for target, value, text in parsed:
        annotation = field_annotation(model, target.split("."), result)
        set_path(result, target, _read_text(value, annotation, f"override {text!r}"))
    return result


def model_has_tables(model: type[BaseModel]) -> bool:
    """Whether ``model``'s top-level fields are tables (sub-models), like ``trainer.epochs``."""
    return any(_model_of(f.annotation) is not None for f in model.model_fields.values())


def build(model: type[M], raw: Mapping[str, Any], source: str = "config", *,
          flags: Mapping[str, str] | None = None) -> M:
    """``model`` validated from ``raw``; a ValidationError becomes one :class:`ConfigError` line
    (fields named by their CLI ``flags`` where given)."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        message = describe_errors(error, model, flags=flags)
        raise ConfigError(message if flags else f"{source}: {message}") from None


def describe_errors(error: ValidationError, model: type[BaseModel], *,
                    flags: Mapping[str, str] | None = None) -> str:
    """pydantic's errors as ``field.path: what was expected, got VALUE`` phrases."""
    return "; ".join(_describe(item, model, flags or {}) for item in error.errors(include_url=False))


def _describe(item: Mapping[str, Any], model: type[BaseModel], flags: Mapping[str, str]) -> str:
    loc = [str(part) for part in item["loc"] if not str(part).startswith("function-")]
    where = ".".join(loc) or "settings"
    if loc and loc[0] in flags:
        where = flags[loc[0]] + "".join(f"[{part}]" for part in loc[1:])
    kind, value = item["type"], item.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        fields = sorted(parent.model_fields) if parent is not None else []
        if not loc[:-1]:
            return f"unknown table {loc[-1]!r}; use {', '.join(fields)}"
        return f"{'.'.join(loc[:-1])} has no field {loc[-1]!r}; fields: {fields}"
    expected = {
        "int_parsing": "an integer",
        "int_type": "an integer",
        "int_from_float": "an integer",
        "float_parsing": "a number",
        "float_type": "a number",
        "bool_parsing": "true or false",
        "bool_type": "true or false",
        "string_type": "a string",
        "list_type": "a list",
        "tuple_type": "a list",
        "dict_type": "a table",
        "model_type": "a table of settings",
        "missing": "a value (it is required)",
    }.get(kind)
    if kind == "literal_error":
        choices = item.get("ctx", {}).get("expected", "")
        return f"{where}: expected one of {choices}, got {value!r}"
    if kind == "missing" and loc and loc[-1].isdigit():  # a tuple given too few values
        parent = ".".join(loc[:-1])
        return f"{parent}: expected {int(loc[-1]) + 1} values or more, got {value!r}"
    if kind == "missing":
        return f"{where}: a value is required"
    if kind in ("too_short", "too_long"):
        return f"{where}: {item['msg'].lower()}, got {value!r}"
    if expected is not None:
        return f"{where}: expected {expected}, got {value!r}"
    message = str(item["msg"])
    if kind == "value_error":  # a validator's own message says everything
        message = message.removeprefix("Value error, ")
        return f"{where}: {message}" if loc else message
    message = message.replace("Input should be", "must be")
    return f"{where}: {message[0].lower() + message[1:] if message else kind}, got {value!r}"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation is (or is optionally), else None."""
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _model_at(model: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    for key in loc:
        if current is None or key not in current.model_fields:
            return None
        current = _model_of(current.model_fields[key].annotation)
    return current


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly nested, possibly Annotated) union; the annotation otherwise."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _read_text(text: str, annotation: Any, where: str) -> Any:
    """An override's text as a value pydantic can validate against ``annotation``."""
    if text.lower() in _NO_VALUE:
        return None
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{where}: not valid JSON: {error}") from None
    sequence = next(
        (m for m in _members(annotation) if typing.get_origin(m) in (list, tuple) or m in (list, tuple)),
        None,
    )
    if sequence is not None:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text
