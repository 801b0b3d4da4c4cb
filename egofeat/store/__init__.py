"""The on-disk feature store: zarr v3 feature arrays indexed by parquet manifests.

See docs/FORMAT.md for the layout; zarr + polars alone can read it.
"""

from egofeat.store.errors import (
    IncompatibleStreamError,
    PartAlreadyCommittedError,
    QueryError,
    SegmentConflictError,
    StoreAccessError,
    StoreError,
    StoreFullError,
    StoreNotFoundError,
    StorePermissionError,
    StoreReadOnlyError,
    StoreVersionError,
    StreamBusyError,
    StreamNotFoundError,
)
from egofeat.store.layout import safe_part_id
from egofeat.store.manifest import (
    ERROR_REASONS,
    MANIFEST_SCHEMA,
    STATUS_ERROR,
    STATUS_OK,
    is_retryable,
)
from egofeat.store.provenance import provenance_diff, provenance_key
from egofeat.store.store import FeatureStore
from egofeat.store.stream import LoadedStream, Stream
from egofeat.store.stream_info import StreamInfo
from egofeat.store.vocabularies import VocabularyConflictError
from egofeat.store.writer import PartWriter

__all__ = [
    "ERROR_REASONS",
    "FeatureStore",
    "IncompatibleStreamError",
    "LoadedStream",
    "MANIFEST_SCHEMA",
    "PartAlreadyCommittedError",
    "PartWriter",
    "QueryError",
    "STATUS_ERROR",
    "STATUS_OK",
    "SegmentConflictError",
    "StoreAccessError",
    "StoreError",
    "StoreFullError",
    "StoreNotFoundError",
    "StorePermissionError",
    "StoreReadOnlyError",
    "StoreVersionError",
    "Stream",
    "StreamBusyError",
    "StreamInfo",
    "StreamNotFoundError",
    "VocabularyConflictError",
    "is_retryable",
    "provenance_diff",
    "provenance_key",
    "safe_part_id",
]
