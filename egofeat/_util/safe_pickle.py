"""One restricted unpickler: a pickle may name only the globals an allowlist admits.

A pickle can name any importable callable and have it called while loading (``os.system`` is
the classic example). Files from elsewhere (EPIC results pickles, hand-object detections) are
therefore read with an unpickler that resolves only the ``"module.name"`` globals its caller
allows and refuses every other name before anything is imported or called.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

__all__ = ["RestrictedUnpickler", "UnsafePickleError", "restricted_load"]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referred to a global outside the caller's allowlist; nothing of it ran."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``file``, resolving only the globals in ``allowed`` (``"module.name"`` keys).

    Args:
        file: a binary file object.
        allowed: ``"module.name"`` -> the object a pickle may refer to by that name.
        source: what is being read, for messages (a path).
        allowed_what: what the allowlist admits, for the refusal ("a numpy array helper").
        hint: what such files should hold instead, appended to the refusal.
    """

    def __init__(
        self,
        file: BinaryIO,
        allowed: Mapping[str, object],
        *,
        source: str,
        allowed_what: str = "on the allowlist",
        hint: str = "",
    ) -> None:
        super().__init__(file)
        self._allowed, self._source = allowed, source
        self._what, self._hint = allowed_what, hint

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._allowed[f"{module}.{name}"]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {self._source}: it calls {module}.{name}, a global that is "
                f"not {self._what}, and loading it could run arbitrary code. {self._hint}".rstrip()
            ) from None


def restricted_load(
    data: bytes | str | os.PathLike[str],
    allowed: Mapping[str, object],
    *,
    source: str | None = None,
    allowed_what: str = "on the allowlist",
    hint: str = "",
) -> object:
    """Unpickle a file path or ``bytes`` with :class:`RestrictedUnpickler`.

    Raises:
        UnsafePickleError: the pickle names a global outside ``allowed``.
    """
    options = {"allowed_what": allowed_what, "hint": hint}
    if isinstance(data, bytes):
        file = io.BytesIO(data)
        return RestrictedUnpickler(file, allowed, source=source or "data", **options).load()
    path = Path(data)
    with path.open("rb") as handle:
        return RestrictedUnpickler(handle, allowed, source=source or str(path), **options).load()
