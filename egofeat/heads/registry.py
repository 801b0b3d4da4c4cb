"""Registries of head architectures and training tasks, in the style of timm's model registry.

A head factory is a callable ``factory(*, in_dims, num_frames, num_classes, **kwargs)`` returning
an ``nn.Module`` whose ``forward(batch)`` maps a batch dict to a dict of task logits. Register
one with :func:`register_head` and build it by name with :func:`create_head`::

    head = create_head("trn", in_dims={"clip/full": 512, "clip/hand": 512}, num_frames=8,
                       num_classes={"verb": 97, "noun": 300}, dropout=0.5)

``create_head`` attaches a :class:`HeadSpec` to the module as ``head.head_spec``: everything
needed to build the same module again, which checkpoints store.

Each head names the training task it is trained with by default (``register_head(name,
task=...)``, see :mod:`egofeat.heads.tasks`); tasks register here too (:func:`register_task`),
so configs can be checked without importing the training machinery.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = [
    "ANY_STREAM",
    "DEFAULT_TASK",
    "HeadSpec",
    "create_head",
    "head_entrypoint",
    "head_kwargs",
    "head_task",
    "list_heads",
    "list_tasks",
    "register_head",
    "register_task",
    "task_class",
]

ANY_STREAM = "*"
"""Stream key meaning "the one stream in the batch, whatever its name" (``in_dims`` given as int)."""

HeadFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, HeadFactory] = {}
_HEAD_TASKS: dict[str, str] = {}
_TASKS: dict[str, type] = {}
_RESERVED = ("in_dims", "num_frames", "num_classes")
DEFAULT_TASK = "classification"
"""The task a head trains with unless it names another."""


@dataclass(frozen=True)
class HeadSpec:
    """Everything needed to rebuild a head: registered name, input/output sizes and kwargs."""

    name: str
    in_dims: dict[str, int]
    num_frames: int
    num_classes: dict[str, int]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in_dims": dict(self.in_dims),
            "num_frames": self.num_frames,
            "num_classes": dict(self.num_classes),
            "kwargs": dict(self.kwargs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadSpec:
        return cls(
            name=data["name"],
            in_dims=dict(data["in_dims"]),
            num_frames=int(data["num_frames"]),
            num_classes=dict(data["num_classes"]),
            kwargs=dict(data.get("kwargs", {})),
        )

    def build(self) -> nn.Module:
        """Create a freshly initialised head from this spec."""
        return create_head(
            self.name,
            in_dims=self.in_dims,
            num_frames=self.num_frames,
            num_classes=self.num_classes,
            **self.kwargs,
        )


def register_head(name: str, *, task: str = DEFAULT_TASK) -> Callable[[HeadFactory], HeadFactory]:
    """Decorator registering a head factory under ``name``, trained by default with ``task``.

    Registering a second factory under a taken name is an error (it would silently change what
    old configs and checkpoints build).
    """

    def decorator(factory: HeadFactory) -> HeadFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"a head named {name!r} is already registered ({_REGISTRY[name]!r})")
        _REGISTRY[name] = factory
        _HEAD_TASKS[name] = task
        return factory

    return decorator


def head_task(name: str) -> str:
    """The training task head ``name`` uses by default."""
    head_entrypoint(name)  # unknown heads are reported with the registered ones
    return _HEAD_TASKS.get(name, DEFAULT_TASK)


def register_task(name: str) -> Callable[[type], type]:
    """Class decorator registering a training task (a :class:`~egofeat.heads.tasks.Task`)."""

    def decorator(cls: type) -> type:
        if name in _TASKS and _TASKS[name] is not cls:
            raise ValueError(f"a task named {name!r} is already registered ({_TASKS[name]!r})")
        _TASKS[name] = cls
        cls.name = name
        return cls

    return decorator


def list_tasks() -> list[str]:
    """Names of the registered training tasks, sorted."""
    return sorted(_TASKS)


def task_class(name: str) -> type:
    """The task class registered under ``name`` (KeyError listing the registered tasks)."""
    try:
        return _TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(list_tasks())}") from None


def list_heads() -> list[str]:
    """Names of the registered heads, sorted."""
    return sorted(_REGISTRY)


def head_entrypoint(name: str) -> HeadFactory:
    """The factory registered under ``name`` (KeyError listing the registered heads)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown head {name!r}; registered heads: {', '.join(list_heads())}"
        ) from None


def head_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments head ``name`` accepts (beyond the sizes), with their defaults.

    Arguments without a default map to ``inspect.Parameter.empty``.
    """
    params = inspect.signature(head_entrypoint(name)).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.name not in _RESERVED and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def _normalise_in_dims(in_dims: Mapping[str, int] | int) -> dict[str, int]:
    if isinstance(in_dims, int):
        in_dims = {ANY_STREAM: in_dims}
    if not in_dims:
        raise ValueError("in_dims is empty: give at least one stream and its feature dimension")
    for stream, dim in in_dims.items():
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"in_dims[{stream!r}] must be a positive int, got {dim!r}")
    if ANY_STREAM in in_dims and len(in_dims) > 1:
        raise ValueError(
            f"stream key {ANY_STREAM!r} (any stream) cannot be mixed with named streams"
        )
    return dict(in_dims)


def _check_num_classes(num_classes: Mapping[str, int]) -> dict[str, int]:
    if not num_classes:
        raise ValueError("num_classes is empty: give at least one task, e.g. {'verb': 97}")
    for task, count in num_classes.items():
        if not isinstance(count, int) or count <= 0:
            raise ValueError(f"num_classes[{task!r}] must be a positive int, got {count!r}")
        if not task.isidentifier():
            raise ValueError(f"task name {task!r} must be a Python identifier (e.g. 'verb')")
    return dict(num_classes)


def create_head(
    name: str,
    *,
    in_dims: Mapping[str, int] | int,
    num_frames: int,
    num_classes: Mapping[str, int],
    **kwargs: Any,
) -> nn.Module:
    """Build the registered head ``name``.

    Args:
        name: a name from :func:`list_heads`.
        in_dims: feature dimension per input stream. Several streams are concatenated per frame
            on the feature axis, in the order given. An int means a single stream of that
            dimension, taken from the batch whatever its name.
        num_frames: frames per segment (T). TRN needs it; the other heads accept any T.
        num_classes: classes per task, e.g. ``{"verb": 97, "noun": 300}``.
        **kwargs: head-specific options (see :func:`head_kwargs`).
    """
    factory = head_entrypoint(name)
    accepted = head_kwargs(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"head {name!r} got unknown option(s) {unknown}; it accepts {sorted(accepted)}"
        )
    if not isinstance(num_frames, int) or num_frames <= 0:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    spec = HeadSpec(
        name=name,
        in_dims=_normalise_in_dims(in_dims),
        num_frames=num_frames,
        num_classes=_check_num_classes(num_classes),
        kwargs=dict(kwargs),
    )
    head = factory(
        in_dims=spec.in_dims, num_frames=num_frames, num_classes=spec.num_classes, **kwargs
    )
    head.head_spec = spec
    return head
