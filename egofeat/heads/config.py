"""Run configuration for heads: which head, how to train it, on which streams (pydantic models).

A config file (TOML or YAML) has up to three tables; every key is optional::

    [head]                 # the head's registered name, then its options
    name = "trn"
    dropout = 0.5

    [trainer]              # TrainConfig fields
    epochs = 30
    lr = 1e-3

    [data]                 # DataConfig fields
    streams = ["clip-vit-b16/full", "clip-vit-b16/hand"]

``--set``-style overrides (``"trainer.epochs=5"``, ``"head.hidden=512"``) apply on top, each
read as the type of the field it sets (see :mod:`egofeat._util.settings`). Unknown tables,
fields and head options are errors that list the valid ones.
"""

from __future__ import annotations

import inspect
import os
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from egofeat._util.settings import (
    ConfigError,
    apply_overrides,
    build,
    describe_errors,
    merge_settings,
    read_settings_file,
    set_path,
)
from egofeat.heads.registry import head_entrypoint, head_kwargs, head_task, task_class

__all__ = [
    "ConfigError",
    "DataConfig",
    "HeadConfig",
    "RunConfig",
    "TaskConfig",
    "TrainConfig",
    "load_config",
]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainConfig(_Settings):
    """How the trainer runs (see :class:`egofeat.heads.trainer.Trainer`).

    The optimizer is ``adamw`` (``betas``) or ``sgd`` (``momentum``, as the EPIC C1 baselines).
    The learning rate warms up linearly over ``warmup_epochs``, then follows ``schedule``:
    ``cosine`` down to ``lr * min_lr_ratio``, ``linear`` decay to it, ``constant``, or ``step``:
    multiplied by ``decay_rate`` at each epoch of ``decay_epochs`` (counted after the warm-up);
    it is updated every optimizer step, or once per epoch with ``step_on_epochs`` (timm's
    schedulers). ``warmup_rule``: ``timm`` rises from ``warmup_lr`` to ``lr``; ``dassl`` is
    ``warmup_lr`` at the first step (or epoch) ``t = 0``, then ``lr * t / warmup`` (Dassl's
    ``LinearWarmupScheduler``, X-MIC's: 1e-7, 1e-4, 2e-4, 3e-4, 4e-4, then 5e-4). Weight decay
    skips biases and norm scales unless
    ``decay_all_parameters``. Early stopping watches ``monitor`` (a key of the per-epoch
    metrics; names ending in ``loss`` are minimised, others maximised; ``None``: the task's
    default) and stops after ``patience`` epochs without improvement (``None`` disables it).

    ``precision``: ``"auto"`` runs bf16 autocast where the hardware multiplies bf16 natively
    (CUDA, CPUs with AMX) and fp32 elsewhere; ``"fp32"`` / ``"bf16"`` force one; ``"fp16"`` is
    fp16 autocast with a gradient scaler on CUDA (mixed precision as torch.cuda.amp, X-MIC's
    ``PREC: amp``) and ``"auto"`` elsewhere. There are no
    loader workers: batches are gathered from in-RAM tensors by indexing.
    """

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(512, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    decay_all_parameters: bool = False
    optimizer: Literal["adamw", "sgd"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Literal["cosine", "linear", "constant", "step"] = "cosine"
    decay_epochs: tuple[float, ...] = ()
    decay_rate: float = Field(0.1, gt=0, le=1)
    warmup_epochs: float = Field(1.0, ge=0)
    warmup_lr: float = Field(0.0, ge=0)
    warmup_rule: Literal["timm", "dassl"] = "timm"
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    step_on_epochs: bool = False
    grad_clip: float | None = Field(5.0, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    tasks: tuple[str, ...] = Field(("verb", "noun"), min_length=1)
    seed: int = 0
    patience: int | None = Field(5, ge=1)
    monitor: str | None = None
    restore_best: bool = True
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    num_threads: int | None = Field(None, ge=1)
    features_on_device: bool = True
    progress: bool = True

    @model_validator(mode="after")
    def _step_schedule(self) -> TrainConfig:
        if self.schedule == "step" and not self.decay_epochs:
            raise ValueError("schedule 'step' needs decay_epochs (e.g. [20, 40])")
        if list(self.decay_epochs) != sorted(self.decay_epochs) or any(e <= 0 for e in self.decay_epochs):
            raise ValueError(f"decay_epochs must be positive and increasing, got {list(self.decay_epochs)}")
        return self


class _Named(BaseModel):
    """A registered name and the options it takes (the model's extra keys)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    @property
    def options(self) -> dict[str, Any]:
        """The options (everything but the name)."""
        return dict(self.model_extra or {})

    @classmethod
    def option_types(cls, name: Any) -> dict[str, Any]:
        """Option name -> annotation of what ``name`` names (KeyError when nothing does)."""
        raise KeyError(name)

    @classmethod
    def extra_field_types(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Option name -> annotation, for typing ``--set`` overrides (unknown name: none)."""
        try:
            return cls.option_types(values.get("name", cls.model_fields["name"].default))
        except KeyError:
            return {}


class HeadConfig(_Named):
    """A registered head name and its options (see ``egofeat heads``), checked against the head's
    signature: unknown options are refused, values typed by its annotations."""

    name: str = "linear"

    @property
    def kwargs(self) -> dict[str, Any]:
        """The head's options (everything but its name), as its factory takes them."""
        return self.options

    @classmethod
    def option_types(cls, name: Any) -> dict[str, Any]:
        return _head_options(str(name))

    @model_validator(mode="before")
    @classmethod
    def _typed_options(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        name = data.get("name", "linear")
        try:
            options = _head_options(name)
        except KeyError as error:
            raise ValueError(error.args[0]) from None
        typed = {"name": name}
        for key, value in data.items():
            if key == "name":
                continue
            if key not in options:
                raise ValueError(
                    f"head {name!r} has no option {key!r}; it accepts {sorted(options)}"
                )
            try:
                typed[key] = TypeAdapter(options[key]).validate_python(value)
            except ValidationError as error:
                raise ValueError(f"head.{key}: {describe_errors(error, cls)}") from None
        return typed


class TaskConfig(_Named):
    """The training task (see ``egofeat.heads.tasks``) and its options; ``name`` defaults to
    the head's task (``classification`` for most heads). Options are checked by the task's
    ``Options`` model when the run config is built."""

    name: str | None = None

    @classmethod
    def option_types(cls, name: Any) -> dict[str, Any]:
        options = task_class(str(name)).Options
        return {key: field.annotation for key, field in options.model_fields.items()}


class DataConfig(_Settings):
    """Which streams and splits a run trains and validates on.

    ``val_split`` is the split early stopping and the reported metrics use; when the store
    lacks it, ``holdout`` of the train videos is held out instead (``0``: no validation).
    ``reserve`` keeps about that share of the train videos out of training altogether (chosen
    by a hash of ``trainer.seed`` and the video id, so runs with one seed reserve the same
    videos whatever streams they read); the run folder lists them (``reserved.json``), and a
    distillation with dataset-level weights calibrates its teachers on them.
    ``missing_labels``: a split where only some segments lack a label stops the run
    (``raise``) or trains without those segments (``drop``, counted in the load report).
    """

    streams: list[str] = Field(default_factory=list)
    dataset: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    holdout: float = Field(0.1, ge=0, lt=1)
    missing_labels: Literal["raise", "drop"] = "raise"
    reserve: float = Field(0.0, ge=0, lt=1)
    cache_dir: str | None = None


class RunConfig(_Settings):
    """A training task, a head, training settings and data: all a run needs besides the store.

    ``task.name`` is resolved from the head when not given, and the task's options are checked
    against the task (``egofeat heads`` lists heads and tasks).
    """

    task: TaskConfig = Field(default_factory=TaskConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    trainer: TrainConfig = Field(default_factory=TrainConfig)
    data: DataConfig = Field(default_factory=DataConfig)

    @model_validator(mode="after")
    def _resolve_task(self) -> RunConfig:
        name = self.task.name or head_task(self.head.name)
        try:
            options_model = task_class(name).Options
        except KeyError as error:
            raise ValueError(error.args[0]) from None
        try:
            options = options_model.model_validate(self.task.options)
        except ValidationError as error:
            raise ValueError(f"task {name!r}: {describe_errors(error, options_model)}") from None
        if self.task.name != name:
            self.task.name = name
        for key, value in options.model_dump(mode="json").items():  # typed, defaults filled in
            setattr(self.task, key, value)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the config-file layout (head options beside ``name``)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> RunConfig:
        """Build and validate from the config-file layout."""
        return build(cls, data, source)


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    values: Mapping[str, Any] | None = None,
    *,
    layers: Sequence[Mapping[str, Any]] = (),
) -> RunConfig:
    """A :class:`RunConfig` from layers of settings, each over the ones before:

    the task's defaults (:attr:`Task.defaults`, e.g. X-MIC's recipe), ``layers`` (dicts in the
    config-file layout, e.g. a named recipe), a TOML / YAML file, ``key=value`` ``overrides``,
    then ``values`` (``{"trainer.epochs": 5}``: typed values from code, e.g. CLI options).
    """
    raw: dict[str, Any] = {}
    for layer in layers:
        raw = merge_settings(raw, layer)
    source = "config"
    if path is not None:
        settings, source = read_settings_file(path), str(path)
        for table, value in settings.items():
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {table!r} must be a table of settings, got {value!r}")
        raw = merge_settings(raw, settings)
    overrides = list(overrides)
    raw = apply_overrides(RunConfig, raw, overrides)
    if overrides:
        source = f"{source} with --set {' '.join(overrides)}" if path else f"--set {' '.join(overrides)}"
    for dotted, value in (values or {}).items():
        set_path(raw, dotted, list(value) if isinstance(value, tuple) else value)
    return build(RunConfig, merge_settings(_task_defaults(raw), raw), source)


def _task_defaults(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults of the task ``raw`` names (or its head's task); none when unknown."""
    task = (raw.get("task") or {}).get("name")
    try:
        return dict(task_class(task or head_task((raw.get("head") or {}).get("name", "linear"))).defaults)
    except (KeyError, AttributeError):
        return {}


def _head_options(name: str) -> dict[str, Any]:
    """Option name -> type of head ``name`` (its annotation, else its default's type)."""
    defaults = head_kwargs(name)
    hints = typing.get_type_hints(head_entrypoint(name))
    return {
        key: hints.get(key, Any if default in (None, inspect.Parameter.empty) else type(default))
        for key, default in defaults.items()
    }
