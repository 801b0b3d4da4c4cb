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


class QueryError(StoreError, ValueError):
    """SQL over a store's tables that polars refuses (the message names the tables' columns)."""


class StoreVersionError(StoreError):
    """A store or stream written in a newer format than this egofeat reads."""


class StoreAccessError(StoreError):
    """The store cannot be written (or read) at all: nothing was committed half-way."""


class StoreFullError(StoreAccessError):
    """The store's disk is full (ENOSPC) or its quota is used up."""


class StoreReadOnlyError(StoreAccessError):
    """The store is on a read-only filesystem."""


class StorePermissionError(StoreAccessError):
    """This user may not write (or read) the store's files."""
