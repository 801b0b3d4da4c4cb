"""Errors raised by the feature store. Each message says what is wrong and how to fix it."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of feature-store errors."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """The path holds no egofeat store."""


class StreamNotFoundError(StoreError, KeyError):
    """A stream name that the store does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class IncompatibleStreamError(StoreError):
    """A write whose provenance or shape differs from the stream it targets."""


class PartAlreadyCommittedError(StoreError):
    """Another writer committed the same part first; this attempt was discarded."""


class SegmentConflictError(StoreError):
    """A segment id that the store already holds with different content."""


class StreamBusyError(StoreError):
    """A live run with a different plan is writing the stream."""
