"""EPIC-KITCHENS results files: verb/noun scores per narration id, for interoperability.

egofeat's own format is :mod:`egofeat.eval.predictions`; this module reads and writes the
layouts other tools use, as plain ``(narration ids, verb scores, noun scores)``:

The EPIC-KITCHENS baselines write ``.pkl`` or ``.pt`` files (``pickle.dump`` or
``torch.save``) in one of two layouts (``reference/formats.md`` §3.1)::

    {"verb_output": float32[N, 97], "noun_output": float32[N, 300], "narration_id": str[N], ...}
    [{"verb_output": float[97], "noun_output": float[300], "narration_id": str, ...}, ...]

and an ``.npz`` (``np.load(path, allow_pickle=False)``) holds the same three arrays.
:func:`read_results_file` reads all of them without executing pickled code (see
the numpy allowlist below; zip-format torch files go through
``torch.load(weights_only=True)``). :func:`write_results_file` writes ``.npz``, or ``.pkl`` in
the EPIC dict layout for the official scorer.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import os
import pickle
import zipfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from egofeat._util.safe_pickle import UnsafePickleError, restricted_load

_KEYS = ("narration_id", "verb_output", "noun_output")
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first object of a non-zip torch.save file


__all__ = ["UnsafePickleError", "allowed_globals", "load_pickle", "read_results_file", "write_results_file"]

# ---- pickles of numpy arrays and plain containers, read without running code -------------

_BUILTINS = (
    "bool",
    "bytearray",
    "bytes",
    "complex",
    "dict",
    "float",
    "frozenset",
    "int",
    "list",
    "set",
    "str",
    "tuple",
)


@cache
def allowed_globals() -> dict[str, object]:
    """The globals a numpy-array pickle may use, keyed by ``"module.name"`` as pickles spell them.

    numpy's pickling helpers are taken from numpy's own ``__reduce__`` results (so they are
    right for the installed numpy) and listed under both the numpy 1 (``numpy.core``) and the
    numpy 2 (``numpy._core``) module paths, so pickles written by either version load.
    """
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    allowed: dict[str, object] = {
        "numpy.ndarray": np.ndarray,
        "numpy.dtype": np.dtype,
        "_codecs.encode": codecs.encode,  # bytes inside protocol-2 pickles
        "collections.OrderedDict": collections.OrderedDict,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[f"{core}.multiarray._reconstruct"] = reconstruct
        allowed[f"{core}.multiarray.scalar"] = scalar
        allowed[f"{core}.numeric._frombuffer"] = frombuffer
    for name in _BUILTINS:
        allowed[f"builtins.{name}"] = getattr(builtins, name)
    return allowed


def torch_safe_globals() -> list[object]:
    """The same allowlist, in the form ``torch.serialization.safe_globals`` takes.

    torch's ``weights_only`` unpickler also checks the class of every object whose state it
    sets, so the dtype classes of bool, numeric, string and object arrays are added.
    """
    numpy_names = [(obj, name) for name, obj in allowed_globals().items() if "numpy" in name]
    dtype_classes = {type(np.dtype(code)) for code in "?bhilqBHILQefdgFDGSUO"}
    return [*numpy_names, *dtype_classes]


_HINT = (
    "Results files must hold only numpy arrays, lists, dicts and strings; re-save them as such "
    "(e.g. with egofeat.eval.save_predictions)."
)


def load_pickle(path: str | Path) -> object:
    """Unpickle ``path``, allowing only numpy arrays/scalars and builtin containers.

    Raises:
        UnsafePickleError: the pickle names any other global; nothing of it was executed.
    """
    return restricted_load(path, allowed_globals(), hint=_HINT,
                           allowed_what="a numpy array/scalar helper or a builtin container")


ResultsArrays = tuple[list, np.ndarray, np.ndarray]
"""``(narration ids, verb scores, noun scores)`` as a file holds them: the caller validates them
(:class:`~egofeat.eval.predictions.Predictions`)."""


def write_results_file(
    narration_ids: Sequence[str], verb_output: np.ndarray, noun_output: np.ndarray, path: str | Path
) -> Path:
    """Write scores to ``path``: ``.npz`` or ``.pkl`` (EPIC dict layout).

    The file is written beside its final name and renamed into place, so a reader never sees
    a half-written file.
    """
    path = Path(path)
    if path.suffix not in (".npz", ".pkl"):
        raise ValueError(f"{path}: results files are .npz or .pkl (EPIC layout)")
    arrays = {"narration_id": np.asarray(list(narration_ids), dtype=str),
              "verb_output": np.asarray(verb_output, dtype=np.float32),
              "noun_output": np.asarray(noun_output, dtype=np.float32)}
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as file:
        if path.suffix == ".npz":
            np.savez(file, **arrays)
        else:
            pickle.dump(arrays, file, protocol=4)
    os.replace(partial, path)
    return path


def read_results_file(path: str | Path) -> ResultsArrays:
    """Read a results file: an ``.npz``, or an EPIC ``.pkl`` / ``.pt`` in either layout.

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
            return data["narration_id"].tolist(), data["verb_output"], data["noun_output"]
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
    raise ValueError(f"{path}: unknown results suffix {path.suffix!r}; use .parquet, .npz, .pkl or .pt")


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


def _from_epic_layout(content: object, source: Path) -> ResultsArrays:
    if isinstance(content, dict):
        missing = [k for k in _KEYS if k not in content]
        if missing:
            raise ValueError(
                f"{source}: dict layout lacks keys {missing}; it has {sorted(map(str, content))}"
            )
        ids = np.asarray(content["narration_id"]).reshape(-1).tolist()
        return ids, _numpy(content["verb_output"]), _numpy(content["noun_output"])
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
        return (
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
