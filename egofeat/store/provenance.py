"""Stream provenance: what produced a stream's features, and when two writes are compatible.

A provenance is a JSON-able dict (encoder name, weights hash, preprocessing, crop rule and
thresholds, frame sampling, ...). Two provenances are compatible when they are equal after
dropping the keys that describe *who* wrote the data rather than *what* it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

#: Keys that may differ between writes into one stream (they don't change the features).
VOLATILE_KEYS = frozenset({"egofeat_version", "created_at", "host", "run_id", "timing"})


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) used for hashing and comparison."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"provenance value {value!r} of type {type(value).__name__} is not JSON-able")


def comparable(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance without volatile keys, normalized through JSON."""
    stable = {k: v for k, v in provenance.items() if k not in VOLATILE_KEYS}
    return json.loads(canonical_json(stable))


def provenance_diff(
    existing: Mapping[str, Any], incoming: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """Human-readable differences between two provenances, one line per differing key."""
    a, b = comparable(existing), comparable(incoming)
    lines: list[str] = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        if key not in a:
            lines.append(f"{name}: absent in the stream, {b[key]!r} in this write")
        elif key not in b:
            lines.append(f"{name}: {a[key]!r} in the stream, absent in this write")
        elif isinstance(a[key], dict) and isinstance(b[key], dict):
            lines.extend(provenance_diff(a[key], b[key], prefix=f"{name}."))
        elif a[key] != b[key]:
            lines.append(f"{name}: {a[key]!r} in the stream, {b[key]!r} in this write")
    return lines


def provenance_key(provenance: Mapping[str, Any]) -> str:
    """A short stable hash of the comparable provenance (the resume key of a stream)."""
    return hashlib.sha256(canonical_json(comparable(provenance)).encode()).hexdigest()[:16]
