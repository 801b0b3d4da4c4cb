"""Values as plain JSON: NaN and infinities become ``null``, numpy scalars become numbers."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` with dicts, lists and tuples walked, non-finite floats as ``None``, numpy (and
    torch) scalars as Python numbers, and anything else that JSON lacks as its ``str``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, bytes):
        try:
            return jsonable(item())
        except (ValueError, TypeError):
            pass
    return str(value)
