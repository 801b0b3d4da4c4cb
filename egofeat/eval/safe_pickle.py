"""Read pickles that hold only numpy arrays and plain containers, without running pickled code.

A pickle can name any importable callable and have it called while loading (``os.system`` is
the classic example), so results files from elsewhere are read with an unpickler that resolves
only the globals numpy arrays and scalars need, plus builtin containers, and refuses every other
name before anything is imported or called.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import pickle
from functools import cache
from pathlib import Path
from typing import BinaryIO

import numpy as np

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


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referred to a global outside the numpy/container allowlist."""


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


class _AllowlistUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> object:
        try:
            return allowed_globals()[f"{module}.{name}"]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {self._source}: it calls {module}.{name}, which is not "
                "a numpy array/scalar helper or a builtin container, and loading it could run "
                "arbitrary code. Results files must hold only numpy arrays, lists, dicts and "
                "strings; re-save them as such (e.g. with egofeat.eval.save_results)."
            ) from None


def load_pickle(path: str | Path) -> object:
    """Unpickle ``path``, allowing only numpy arrays/scalars and builtin containers.

    Raises:
        UnsafePickleError: the pickle names any other global; nothing of it was executed.
    """
    path = Path(path)
    with path.open("rb") as file:
        return _AllowlistUnpickler(file, str(path)).load()
