"""Shared test fixtures.

Tests that need the real annotation files read them from ``../shared/data`` (beside the
checkout). Elsewhere they skip with a reason; under ``CI=true`` a missing ``../shared`` fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _shared_data() -> Path:
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    message = f"../shared/data not found at {SHARED_DATA}: the real EPIC-KITCHENS annotation files live there"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: this is a failure, not a skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data``."""
    return _shared_data()


@pytest.fixture(scope="session")
def epic_dir(shared_data: Path) -> Path:
    """Path of the real EPIC-KITCHENS-100 annotation folder."""
    return shared_data / "epic100"
