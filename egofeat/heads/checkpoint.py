"""Head checkpoints: weights plus everything needed to trust and resume them.

A checkpoint is a ``torch.save`` of a dict holding only tensors and plain Python values, so
``torch.load(path, weights_only=True)`` reads it. Besides the model weights it keeps the head
spec (to rebuild the module), the run config, class names per task, the provenance of every
stream the head was trained on, the metrics history, and the optimizer / schedule / RNG /
early-stopping state that makes a resumed run continue exactly where it stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import egofeat
from egofeat.heads.registry import HeadSpec
from egofeat.store.provenance import comparable

__all__ = [
    "Checkpoint",
    "ProvenanceMismatchError",
    "check_provenance",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = "egofeat.heads.checkpoint"
FORMAT_VERSION = 1


class ProvenanceMismatchError(ValueError):
    """The features given to a head were not made the way its training features were."""


@dataclass
class Checkpoint:
    """A trained (or training) head and its context.

    ``epoch`` counts completed epochs. ``head`` is ``None`` for modules not built by
    :func:`~egofeat.heads.registry.create_head`; such checkpoints keep weights but cannot
    :meth:`build_model`. ``trainer_state`` is the trainer's private resume state.
    """

    model_state: dict[str, Tensor]
    head: HeadSpec | None = None
    config: dict[str, Any] = field(default_factory=dict)
    class_names: dict[str, list[str]] = field(default_factory=dict)
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 0
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    trainer_state: dict[str, Any] | None = None
    egofeat_version: str = egofeat.__version__

    def build_model(self) -> nn.Module:
        """The head with this checkpoint's weights, in eval mode."""
        if self.head is None:
            raise ValueError(
                "this checkpoint has no head spec (its model was not built with create_head); "
                "build the module yourself and load checkpoint.model_state into it"
            )
        model = self.head.build()
        model.load_state_dict(self.model_state)
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "egofeat_version": self.egofeat_version,
            "model_state": dict(self.model_state),
            "head": _plain(self.head.to_dict(), "head spec") if self.head else None,
            "config": _plain(self.config, "config"),
            "class_names": _plain(self.class_names, "class names"),
            "provenance": _plain(self.provenance, "provenance"),
            "history": _plain(self.history, "history"),
            "epoch": int(self.epoch),
            "optimizer_state": self.optimizer_state,
            "scheduler_state": self.scheduler_state,
            "trainer_state": self.trainer_state,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        return cls(
            model_state=dict(data["model_state"]),
            head=HeadSpec.from_dict(data["head"]) if data.get("head") else None,
            config=data.get("config") or {},
            class_names=data.get("class_names") or {},
            provenance=data.get("provenance") or {},
            history=list(data.get("history") or []),
            epoch=int(data.get("epoch", 0)),
            optimizer_state=data.get("optimizer_state"),
            scheduler_state=data.get("scheduler_state"),
            trainer_state=data.get("trainer_state"),
            egofeat_version=data.get("egofeat_version", "unknown"),
        )


def _plain(value: Any, what: str) -> Any:
    """``value`` as plain JSON types (dicts, lists, str, numbers, bools, None)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise TypeError(f"checkpoint {what} must be JSON-able: {error}") from None


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (a crash never leaves a torn file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    torch.save(checkpoint.to_dict(), partial)
    os.replace(partial, path)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    data = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an egofeat head checkpoint (no format={FORMAT!r} key)")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {data['format_version']}, newer than this egofeat "
            f"reads ({FORMAT_VERSION}); upgrade egofeat"
        )
    return Checkpoint.from_dict(data)


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, Mapping) and item:
            flat.update(_flatten(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


def check_provenance(
    checkpoint: Checkpoint | Mapping[str, Mapping[str, Any]],
    streams_provenance: Mapping[str, Mapping[str, Any]],
    *,
    ignore: Iterable[str] = (),
) -> None:
    """Refuse features that were not made like the ones the head was trained on.

    Every stream the checkpoint was trained on must be given, with a provenance equal to the
    training one, except for keys that describe who wrote the data rather than what it is
    (``egofeat_version``, ``created_at``, ...; see ``egofeat.store.provenance``) and the
    (dotted) keys in ``ignore``. Streams given beyond those are not checked.

    Raises:
        ProvenanceMismatchError: listing every missing stream and every differing key with
            both values.
    """
    trained = checkpoint.provenance if isinstance(checkpoint, Checkpoint) else checkpoint
    ignored = set(ignore)
    problems: list[str] = []
    for stream, expected in trained.items():
        if stream not in streams_provenance:
            problems.append(f"stream {stream!r}: trained on it, not given")
            continue
        want = _flatten(comparable(expected))
        got = _flatten(comparable(streams_provenance[stream]))
        for key in sorted((set(want) | set(got)) - ignored):
            if key not in got:
                problems.append(f"{stream} {key}: trained {want[key]!r}, absent now")
            elif key not in want:
                problems.append(f"{stream} {key}: absent in training, {got[key]!r} now")
            elif want[key] != got[key]:
                problems.append(f"{stream} {key}: trained {want[key]!r}, now {got[key]!r}")
    if problems:
        raise ProvenanceMismatchError(
            "features differ from those the head was trained on:\n  "
            + "\n  ".join(problems)
            + "\nre-extract the streams with the training settings, or retrain the head "
            "(in Python, check_provenance(..., ignore=[...]) skips keys known not to matter)"
        )
