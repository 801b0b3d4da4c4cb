"""Run configuration for heads: which head, how to train it, on which streams.

A config file (TOML or YAML) has up to three tables; every key is optional::

    [head]                 # the head's registered name, then its options
    name = "trn"
    dropout = 0.5

    [trainer]              # TrainConfig fields
    epochs = 30
    lr = 1e-3

    [data]                 # DataConfig fields
    streams = ["clip-vit-b16/full", "clip-vit-b16/hand"]

Command-line style overrides (``"trainer.epochs=5"``, ``"head.hidden=512"``) are applied on
top and parsed to the type of the field they set (``none`` / ``null`` for optional fields,
``[0.9, 0.99]`` or ``0.9,0.99`` for sequences). Unknown tables, fields and head options are
errors that list the valid ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from egofeat.heads.registry import head_entrypoint, head_kwargs

__all__ = [
    "ConfigError",
    "DataConfig",
    "HeadConfig",
    "RunConfig",
    "TrainConfig",
    "load_config",
]


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says where and why."""


@dataclass
class TrainConfig:
    """How the trainer runs (see :class:`egofeat.heads.trainer.Trainer`).

    The learning rate warms up linearly over ``warmup_epochs`` then follows a cosine down to
    ``lr * min_lr_ratio``, updated every step. Early stopping watches ``monitor`` (a key of the
    per-epoch metrics, e.g. ``val_top1_mean`` or ``val_loss``; names ending in ``loss`` are
    minimised, others maximised) and stops after ``patience`` epochs without improvement
    (``None`` disables it).

    ``precision``: ``"auto"`` runs bf16 autocast where the hardware multiplies bf16 natively
    (CUDA, CPUs with AMX) and fp32 elsewhere; ``"fp32"`` / ``"bf16"`` force one. There are no
    loader workers: batches are gathered from in-RAM tensors by indexing.
    """

    epochs: int = 20
    batch_size: int = 512
    eval_batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 5.0
    label_smoothing: float = 0.0
    tasks: tuple[str, ...] = ("verb", "noun")
    seed: int = 0
    patience: int | None = 5
    monitor: str = "val_top1_mean"
    restore_best: bool = True
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_threads: int | None = None
    features_on_device: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "eval_batch_size": self.eval_batch_size >= 1,
            "lr": self.lr > 0,
            "warmup_epochs": self.warmup_epochs >= 0,
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "grad_clip": self.grad_clip is None or self.grad_clip > 0,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "tasks": len(self.tasks) > 0,
            "patience": self.patience is None or self.patience >= 1,
            "precision": self.precision in ("auto", "fp32", "bf16"),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = {name: getattr(self, name) for name in bad}
            raise ConfigError(f"invalid trainer settings {values}")


@dataclass
class HeadConfig:
    """A registered head name and its options (see ``egofeat.heads.list_heads``)."""

    name: str = "linear"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Which streams and splits a run trains and validates on."""

    streams: list[str] = field(default_factory=list)
    dataset: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    cache_dir: str | None = None


@dataclass
class RunConfig:
    """A head, its training settings and its data: everything a run needs besides the store."""

    head: HeadConfig = field(default_factory=HeadConfig)
    trainer: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the config-file layout (head options beside ``name``)."""
        trainer = dataclasses.asdict(self.trainer)
        trainer = {k: list(v) if isinstance(v, tuple) else v for k, v in trainer.items()}
        return {
            "head": {"name": self.head.name, **self.head.kwargs},
            "trainer": trainer,
            "data": dataclasses.asdict(self.data),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> RunConfig:
        """Build and validate from the config-file layout."""
        unknown = sorted(set(data) - {"head", "trainer", "data"})
        if unknown:
            raise ConfigError(f"{source}: unknown table(s) {unknown}; use head, trainer, data")
        head = dict(data.get("head") or {})
        name = head.pop("name", HeadConfig.name)
        options = _head_options(name, source)
        for key, value in head.items():
            if key not in options:
                raise ConfigError(
                    f"{source}: head {name!r} has no option {key!r}; it accepts {sorted(options)}"
                )
            head[key] = _coerce(value, options[key], f"{source}: head.{key}")
        return cls(
            head=HeadConfig(name=name, kwargs=head),
            trainer=_build(TrainConfig, data.get("trainer") or {}, f"{source}: trainer"),
            data=_build(DataConfig, data.get("data") or {}, f"{source}: data"),
        )


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Iterable[str] = ()
) -> RunConfig:
    """Read a TOML / YAML run config (or start from defaults) and apply ``overrides``."""
    raw: dict[str, Any] = {}
    source = "config"
    if path is not None:
        raw, source = _read(Path(path)), str(path)
    return RunConfig.from_dict(apply_overrides(raw, overrides), source)


def _read(path: Path) -> dict[str, Any]:
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
        raise ConfigError(f"{path}: expected tables head / trainer / data at the top level")
    for table, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {table!r} must be a table of settings, got {value!r}")
    return data


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``raw`` (config-file layout) with ``table.key=value`` overrides applied, values typed
    by the field they set. Head-name overrides apply first, so options of the new head parse."""
    result = {table: dict(values) for table, values in raw.items()}
    parsed = [_split_override(text) for text in overrides]
    parsed.sort(key=lambda item: (item[0], item[1]) != ("head", "name"))
    for table, key, text, where in parsed:
        if table == "head":
            head = result.setdefault("head", {})
            if key == "name":
                head["name"] = text
                continue
            name = head.get("name", HeadConfig.name)
            options = _head_options(name, where)
            if key not in options:
                raise ConfigError(
                    f"{where}: head {name!r} has no option {key!r}; it accepts {sorted(options)}"
                )
            head[key] = _parse(text, options[key], where)
        else:
            fields = _field_types(TrainConfig if table == "trainer" else DataConfig)
            if key not in fields:
                raise ConfigError(
                    f"{where}: {table} has no field {key!r}; fields: {sorted(fields)}"
                )
            result.setdefault(table, {})[key] = _parse(text, fields[key], where)
    return result


def _split_override(text: str) -> tuple[str, str, str, str]:
    where = f"override {text!r}"
    target, sep, value = text.partition("=")
    table, dot, key = target.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError(f"{where}: write overrides as table.key=value, e.g. trainer.epochs=5")
    if table not in ("head", "trainer", "data"):
        raise ConfigError(f"{where}: unknown table {table!r}; use head, trainer or data")
    return table, key.strip(), value.strip(), where


def _head_options(name: str, where: str) -> dict[str, Any]:
    """Option name -> type (annotation, or the default's type when unannotated)."""
    try:
        defaults = head_kwargs(name)
    except KeyError as error:
        raise ConfigError(f"{where}: {error.args[0]}") from None
    hints = typing.get_type_hints(head_entrypoint(name))
    return {
        key: hints.get(key, type(default) if default is not None else Any)
        for key, default in defaults.items()
    }


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    fields = _field_types(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; fields: {sorted(fields)}")
    typed = {key: _coerce(value, fields[key], f"{where}.{key}") for key, value in values.items()}
    return cls(**typed)


def _parse(text: str, annotation: Any, where: str) -> Any:
    """An override's text as a value of ``annotation``."""
    if text.lower() in ("none", "null"):
        return _coerce(None, annotation, where)
    kinds = _kinds(annotation)
    sequence = next(
        (a for a in _members(annotation) if typing.get_origin(a) in (list, tuple)), None
    )
    if sequence is not None:
        if text.startswith("["):
            return _coerce(_json(text, where), annotation, where)
        parts = [part.strip() for part in text.split(",") if part.strip()]
        args = typing.get_args(sequence)
        fixed = typing.get_origin(sequence) is tuple and args and args[-1] is not Ellipsis
        items = (
            args if fixed and len(args) == len(parts) else [args[0] if args else Any] * len(parts)
        )
        values = [_parse(part, item, where) for part, item in zip(parts, items, strict=True)]
        return _coerce(values, annotation, where)
    if bool in kinds:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {text!r}")
    if str in kinds or _is_literal(annotation):
        return _coerce(text, annotation, where)
    if any(kind in (int, float) for kind in kinds):
        return _coerce(_json(text, where), annotation, where)
    return _coerce(_json(text, where, fallback=True), annotation, where)


def _json(text: str, where: str, fallback: bool = False) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if fallback:
            return text
        raise ConfigError(f"{where}: cannot read {text!r} as a value") from None


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union annotation (the annotation itself otherwise)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _kinds(annotation: Any) -> list[Any]:
    """The plain types a (possibly optional / union) annotation allows."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [kind for arg in typing.get_args(annotation) for kind in _kinds(arg)]
    return [origin or annotation]


def _is_literal(annotation: Any) -> bool:
    return typing.get_origin(annotation) is Literal


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against (and converted to) ``annotation``; ConfigError if impossible."""
    if annotation is Any:
        return value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits no type")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)}")
            return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if value is None:
        raise ConfigError(f"{where}: a value is required")
    return value
