"""The errors that are the user's input (reported as one line, exit status 2), not bugs."""

from __future__ import annotations

from egofeat.store import StoreError

__all__ = ["USER_ERRORS"]

#: bad files, flags, settings, devices, stores: each message says what to change
USER_ERRORS: tuple[type[BaseException], ...] = (
    StoreError, ValueError, KeyError, FileNotFoundError, FileExistsError,
)
