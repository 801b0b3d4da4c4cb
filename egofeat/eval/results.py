"""Per-segment verb/noun outputs ("results files"): our format, the EPIC baselines' format, fusion.

Our format is a numpy ``.npz`` (read with ``np.load(path, allow_pickle=False)``) holding
``narration_id`` (unicode strings, N), ``verb_output`` (float32 N × V) and ``noun_output``
(float32 N × M): raw, pre-softmax logits.

The EPIC-KITCHENS baselines write ``.pkl`` or ``.pt`` files (``pickle.dump`` or
``torch.save``) in one of two layouts (``reference/formats.md`` §3.1)::

    {"verb_output": float32[N, 97], "noun_output": float32[N, 300], "narration_id": str[N], ...}
    [{"verb_output": float[97], "noun_output": float[300], "narration_id": str, ...}, ...]

:func:`load_results` reads both layouts without executing pickled code (see
:mod:`egofeat.eval.safe_pickle`; zip-format torch files go through
``torch.load(weights_only=True)``). :func:`save_results` writes ``.npz``, or ``.pkl`` in the
EPIC dict layout for the official scorer.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .safe_pickle import UnsafePickleError, load_pickle, torch_safe_globals

_KEYS = ("narration_id", "verb_output", "noun_output")
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first object of a non-zip torch.save file


@dataclass(frozen=True)
class Results:
    """Verb and noun logits of N segments, keyed by narration id.

    Attributes:
        narration_ids: N unique segment ids, e.g. ``"P01_11_0"``.
        verb_output: float32 (N, V) pre-softmax verb scores (V = 97 for EPIC-100).
        noun_output: float32 (N, M) pre-softmax noun scores (M = 300 for EPIC-100).
    """

    narration_ids: list[str]
    verb_output: np.ndarray
    noun_output: np.ndarray

    def __post_init__(self) -> None:
        ids = [_as_str(i, position) for position, i in enumerate(self.narration_ids)]
        verb = _logit_block("verb_output", self.verb_output, len(ids))
        noun = _logit_block("noun_output", self.noun_output, len(ids))
        if len(set(ids)) != len(ids):
            repeated = sorted(i for i, count in Counter(ids).items() if count > 1)
            raise ValueError(f"narration ids must be unique; repeated: {repeated[:10]}")
        object.__setattr__(self, "narration_ids", ids)
        object.__setattr__(self, "verb_output", verb)
        object.__setattr__(self, "noun_output", noun)

    def __len__(self) -> int:
        return len(self.narration_ids)


def _as_str(value: object, position: int) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if not isinstance(value, str):
        raise ValueError(
            f"narration id #{position} is {value!r} ({type(value).__name__}), not a string"
        )
    return str(value)


def _logit_block(name: str, value: object, n_rows: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != n_rows:
        raise ValueError(f"{name} must have shape ({n_rows}, classes), got {array.shape}")
    return array


def save_results(results: Results, path: str | Path) -> Path:
    """Write ``results`` to ``path``: ``.npz`` (our format) or ``.pkl`` (EPIC dict layout).

    The file is written beside its final name and renamed into place, so a reader never sees
    a half-written file.
    """
    path = Path(path)
    if path.suffix not in (".npz", ".pkl"):
        raise ValueError(f"{path}: results are saved as .npz (ours) or .pkl (EPIC layout)")
    arrays = {
        "narration_id": np.asarray(results.narration_ids, dtype=str),
        "verb_output": results.verb_output,
        "noun_output": results.noun_output,
    }
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as file:
        if path.suffix == ".npz":
            np.savez(file, **arrays)
        else:
            pickle.dump(arrays, file, protocol=4)
    os.replace(partial, path)
    return path


def load_results(path: str | Path) -> Results:
    """Read a results file: our ``.npz``, or an EPIC ``.pkl`` / ``.pt`` in either layout.

    Raises:
        UnsafePickleError: a pickle refers to anything but numpy arrays and containers.
        ValueError: the file does not hold one of the layouts above.
    """
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _KEYS if k not in data.files]
            if missing:
                raise ValueError(f"{path}: missing arrays {missing}; it has {data.files}")
            return Results(data["narration_id"].tolist(), data["verb_output"], data["noun_output"])
    if path.suffix == ".pkl":
        return _from_epic_layout(load_pickle(path), path)
    if path.suffix == ".pt":
        if zipfile.is_zipfile(path):
            return _from_epic_layout(_torch_load(path), path)
        # The TSN/TRN/TSM test script pickle.dump()s to ".pt" names.
        content = load_pickle(path)
        if isinstance(content, int) and content == _LEGACY_TORCH_MAGIC:
            content = _torch_load(path)
        return _from_epic_layout(content, path)
    raise ValueError(f"{path}: unknown results suffix {path.suffix!r}; use .npz, .pkl or .pt")


def _torch_load(path: Path) -> object:
    import torch

    try:
        with torch.serialization.safe_globals(torch_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafePickleError(
            f"refusing to load {path}: torch.load(weights_only=True) rejected it ({error}). "
            "Results files must hold only tensors, numpy arrays, lists, dicts and strings."
        ) from None


def _from_epic_layout(content: object, source: Path) -> Results:
    if isinstance(content, dict):
        missing = [k for k in _KEYS if k not in content]
        if missing:
            raise ValueError(
                f"{source}: dict layout lacks keys {missing}; it has {sorted(map(str, content))}"
            )
        ids = np.asarray(content["narration_id"]).reshape(-1).tolist()
        return Results(ids, _numpy(content["verb_output"]), _numpy(content["noun_output"]))
    if isinstance(content, (list, tuple)):
        for position, entry in enumerate(content):
            if not isinstance(entry, dict) or any(k not in entry for k in _KEYS):
                raise ValueError(
                    f"{source}: list layout entry #{position} must be a dict with keys {_KEYS}"
                )
        verb = [_numpy(e["verb_output"]).reshape(-1) for e in content]
        noun = [_numpy(e["noun_output"]).reshape(-1) for e in content]
        for position, (v, n) in enumerate(zip(verb, noun, strict=True)):
            if v.shape != verb[0].shape or n.shape != noun[0].shape:
                raise ValueError(
                    f"{source}: list layout entry #{position} has {v.size} verb / {n.size} noun "
                    f"scores, entry #0 has {verb[0].size} / {noun[0].size}"
                )
        return Results(
            [e["narration_id"] for e in content],
            np.stack(verb) if verb else np.zeros((0, 0), np.float32),
            np.stack(noun) if noun else np.zeros((0, 0), np.float32),
        )
    raise ValueError(
        f"{source}: expected the EPIC dict or list results layout, got {type(content).__name__}"
    )


def _numpy(value: object) -> np.ndarray:
    """numpy view of an array, list or (CPU) torch tensor."""
    detach = getattr(value, "detach", None)  # torch tensors, without importing torch
    if detach is not None:
        value = detach().cpu().float()  # float() also covers bfloat16, which numpy lacks
    return np.asarray(value, dtype=np.float32)


def fuse_results(results: Sequence[Results]) -> Results:
    """Late fusion: the elementwise mean of the pre-softmax logits of several results files.

    Rows are aligned by narration id; the output follows the first file's row order.

    Raises:
        ValueError: the files cover different segments (the ids missing on either side are
            listed) or have different numbers of classes.
    """
    if not results:
        raise ValueError("fuse_results needs at least one Results")
    first = results[0]
    reference_ids = set(first.narration_ids)
    verb_sum = first.verb_output.astype(np.float64)
    noun_sum = first.noun_output.astype(np.float64)
    for position, other in enumerate(results[1:], start=1):
        if other.verb_output.shape[1:] != first.verb_output.shape[1:] or (
            other.noun_output.shape[1:] != first.noun_output.shape[1:]
        ):
            raise ValueError(
                f"results[{position}] has {other.verb_output.shape[1]} verb / "
                f"{other.noun_output.shape[1]} noun classes, results[0] has "
                f"{first.verb_output.shape[1]} / {first.noun_output.shape[1]}"
            )
        other_ids = set(other.narration_ids)
        if other_ids != reference_ids:
            only_first = sorted(reference_ids - other_ids)
            only_other = sorted(other_ids - reference_ids)
            raise ValueError(
                f"results[0] and results[{position}] cover different segments: "
                f"{len(only_first)} only in results[0] {only_first[:10]}, "
                f"{len(only_other)} only in results[{position}] {only_other[:10]}"
            )
        row_of = {narration_id: row for row, narration_id in enumerate(other.narration_ids)}
        order = np.fromiter((row_of[i] for i in first.narration_ids), np.int64, len(first))
        verb_sum += other.verb_output[order]
        noun_sum += other.noun_output[order]
    return Results(
        list(first.narration_ids),
        (verb_sum / len(results)).astype(np.float32),
        (noun_sum / len(results)).astype(np.float32),
    )
