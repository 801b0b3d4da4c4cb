"""Writing one part of a stream: rows are buffered, then written and committed atomically.

A part is written into its own attempt folder ``parts/<part_id>/<attempt>/`` (one writer per
zarr array, so no chunk is ever shared), and becomes visible only when its commit record
``commits/<part_id>.json`` is created. Creating that record is exclusive: if two writers race
on the same part, one commits and the other's attempt is discarded. A write that fails (a full
disk, a read-only store) discards its attempt too, so nothing is ever committed half-way.

A writer may also *replace* a committed part (``--retry-errors``: some of its error rows done
again): it is given the committed attempt (:class:`BasePart`), writes a new attempt holding the
new rows and, byte for byte, every row it did not redo, and points the commit record at it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import zarr
import zarr.storage

from egofeat.store import layout
from egofeat.store.crashpoints import crash_point
from egofeat.store.errors import IncompatibleStreamError, PartAlreadyCommittedError, StoreError
from egofeat.store.fs import StoreFS
from egofeat.store.manifest import MANIFEST_SCHEMA, STATUS_ERROR, STATUS_OK, is_retryable
from egofeat.store.paths import StreamPaths
from egofeat.store.stream_info import StreamInfo


@dataclass
class _Row:
    segment_id: str
    video_id: str
    features: np.ndarray | None
    frame_times: list[float] | None
    boxes: list[list[float]] | None
    error: str | None
    extra: dict[str, Any]
    reason: str | None = None
    retryable: bool | None = None


@dataclass(frozen=True)
class BasePart:
    """A committed attempt that a writer replaces: its commit record, its manifest rows and
    its features (the ok rows' frames, in manifest order)."""

    record: dict[str, Any]
    manifest: pl.DataFrame
    features: np.ndarray

    @property
    def attempt(self) -> str:
        return str(self.record["attempt"])


class PartWriter:
    """Buffers the rows of one part and commits them atomically.

    Use as a context manager: the part commits when the block ends without an exception and is
    discarded otherwise::

        with stream.part_writer("P01-0001") as part:
            part.add("P01_11_0", "P01_11", feats, frame_times=times)
            part.add_error("P01_11_1", "P01_11", "decode timed out after 60 s")
    """

    def __init__(self, fs: StoreFS, paths: StreamPaths, info: StreamInfo, part_id: str,
                 *, base: BasePart | None = None) -> None:
        self.fs = fs
        self.paths = paths
        self.info = info
        self.part_id = layout.check_part_id(part_id)
        #: the committed attempt this writer replaces (rows not added again are kept as they are)
        self.base = base
        self.attempt = f"{int(time.time() * 1000):x}-{uuid.uuid4().hex[:8]}"
        self._rows: list[_Row] = []
        self._seen: set[str] = set()
        self.committed = False

    @property
    def attempt_dir(self) -> str:
        return self.paths.attempt(self.part_id, self.attempt)

    def add(
        self,
        segment_id: str,
        video_id: str,
        features: np.ndarray,
        *,
        frame_times: Sequence[float] | None = None,
        boxes: Sequence[Sequence[float]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Add an ``ok`` row: ``features`` is (n_frames, dim), or (dim,) for one vector per row.

        A row whose features are not finite becomes an ``error`` row instead of poisoning the stream.
        """
        info = self.info
        feats = np.asarray(features)
        if feats.ndim == 1:
            feats = feats[None, :]
        if feats.ndim != 2 or feats.shape[1] != info.dim:
            raise IncompatibleStreamError(
                f"segment {segment_id!r}: features of shape {feats.shape} do not fit stream "
                f"{info.name!r} (expected (n_frames, {info.dim}))"
            )
        if info.frames_per_row is not None and feats.shape[0] != info.frames_per_row:
            raise IncompatibleStreamError(
                f"segment {segment_id!r}: {feats.shape[0]} frames, but stream {info.name!r} "
                f"holds {info.frames_per_row} frames per row"
            )
        if not np.isfinite(feats).all():
            self.add_error(segment_id, video_id, "encoder produced non-finite features",
                           frame_times=frame_times, reason="non-finite-features")
            return
        self._append(_Row(segment_id, video_id, feats.astype(info.dtype, copy=False),
                          _floats(frame_times), _boxes(boxes), None, dict(extra or {})))

    def add_error(
        self,
        segment_id: str,
        video_id: str,
        error: str,
        *,
        frame_times: Sequence[float] | None = None,
        extra: Mapping[str, Any] | None = None,
        reason: str = "other",
        retryable: bool | None = None,
    ) -> None:
        """Add an ``error`` row: the segment is recorded, with what went wrong, and has no features.

        ``reason`` says why in one word (see :data:`~egofeat.store.manifest.ERROR_REASONS`);
        ``retryable`` whether doing it again may succeed (default: what the reason says).
        """
        retry = is_retryable(reason) if retryable is None else bool(retryable)
        self._append(_Row(segment_id, video_id, None, _floats(frame_times), None, str(error),
                          dict(extra or {}), reason, retry))

    def _append(self, row: _Row) -> None:
        if row.segment_id in self._seen:
            raise ValueError(f"segment {row.segment_id!r} added twice to part {self.part_id!r}")
        self._seen.add(row.segment_id)
        self._rows.append(row)

    def __len__(self) -> int:
        return len(self._rows)

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None and not self.committed:
            self.commit()
        elif exc_type is not None and not self.committed:
            self.abort()

    def commit(self, *, timing: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Write features and manifest, then create the commit record; returns the record.

        Raises PartAlreadyCommittedError if the part was committed by another writer in the
        meantime, and a StoreAccessError if the store cannot be written (disk full, read-only,
        no permission); either way this attempt is discarded and nothing of it is visible.
        """
        if self.committed:
            raise RuntimeError(f"part {self.part_id!r} is already committed")
        try:
            return self._commit(timing)
        except BaseException:
            if not self.committed:
                self._discard()
            raise

    def _commit(self, timing: Mapping[str, float] | None) -> dict[str, Any]:
        if self.base is None and self.fs.exists(self.paths.commit(self.part_id)):
            raise PartAlreadyCommittedError(f"part {self.part_id!r} of stream {self.info.name!r} is already committed")
        if self.base is not None:
            self._check_base()
        rows = self._final_rows()
        n_frames = self._write_features(rows)
        manifest = self._manifest(rows)
        buffer = io.BytesIO()
        manifest.write_parquet(buffer, statistics=True)
        self.fs.write_bytes(self.paths.manifest(self.part_id, self.attempt), buffer.getvalue(), atomic=False)
        n_ok = int((manifest["status"] == STATUS_OK).sum())
        crash_point("before_commit")
        record = {
            "part_id": self.part_id,
            "attempt": self.attempt,
            "rows": len(rows),
            "ok": n_ok,
            "errors": len(rows) - n_ok,
            "n_frames": n_frames,
            "committed_at": time.time(),
            "writer": {"host": socket.gethostname(), "pid": os.getpid()},
            "timing": dict(timing or {}),
        }
        data_path = self.paths.commit(self.part_id)
        if self.base is not None:
            # Readers that listed the old record may still read its attempt: cleanup keeps
            # attempts named in "replaced" for a while (Stream.cleanup).
            record["replaced"] = [self.base.attempt, *self.base.record.get("replaced", [])]
            self._check_base()
            self.fs.write_bytes(data_path, json.dumps(record, indent=1).encode())
        elif not self.fs.create_exclusive(data_path, json.dumps(record, indent=1).encode()):
            raise PartAlreadyCommittedError(
                f"part {self.part_id!r} of stream {self.info.name!r} was committed by another writer first"
            )
        self.committed = True
        crash_point("after_commit")
        return record

    def _check_base(self) -> None:
        """Refuse to replace a part whose record no longer names the attempt this writer started
        from (another writer replaced it; local stores rule that out with the part's lease)."""
        try:
            current = json.loads(self.fs.read_bytes(self.paths.commit(self.part_id)))["attempt"]
        except FileNotFoundError:
            current = None
        if current != self.base.attempt:  # type: ignore[union-attr]
            raise PartAlreadyCommittedError(
                f"part {self.part_id!r} of stream {self.info.name!r} was replaced by another writer"
            )

    def _final_rows(self) -> list[_Row]:
        """The rows to write: this writer's, or, replacing a part, the part's rows in their order
        with those added again swapped in (the others kept byte for byte), then any new ones."""
        if self.base is None:
            return self._rows
        new = {row.segment_id: row for row in self._rows}
        rows = [new.pop(old["segment_id"], None) or self._kept(old)
                for old in self.base.manifest.sort("row").iter_rows(named=True)]
        return rows + [row for row in self._rows if row.segment_id in new]

    def _kept(self, old: dict[str, Any]) -> _Row:
        """A row of the replaced part as it was."""
        features = None
        if old["status"] == STATUS_OK:
            start = int(old["offset"])
            features = self.base.features[start : start + int(old["n_frames"])]  # type: ignore[union-attr]
        extra = {k: v for k, v in old.items() if k not in MANIFEST_SCHEMA}
        return _Row(old["segment_id"], old["video_id"], features, old["frame_times"], old["boxes"],
                    old["error"], extra, old.get("error_reason"), old.get("retryable"))

    def abort(self) -> None:
        """Discard this attempt's files (the part stays uncommitted)."""
        self.fs.remove(self.attempt_dir)

    def _discard(self) -> None:
        """Abort after a failed commit; if even that fails (the store just became unwritable),
        the attempt stays invisible, and a later cleanup removes it."""
        with contextlib.suppress(StoreError, OSError):
            self.abort()

    def _write_features(self, rows: Sequence[_Row] | None = None) -> int:
        """Write the ok rows' frames as this attempt's zarr array; returns the number of frames.

        zarr encodes into memory, chunk by chunk, and every file goes out through the store's
        filesystem layer (one write path for local disks and object stores).
        """
        info = self.info
        ok = [r.features for r in (self._rows if rows is None else rows) if r.features is not None]
        data = np.concatenate(ok) if ok else np.zeros((0, info.dim), dtype=info.dtype)
        rows = chunk_rows(data.shape[0], info.dim * np.dtype(info.dtype).itemsize, info.frames_per_row)
        encoded: dict[str, Any] = {}
        array = zarr.create_array(
            store=zarr.storage.MemoryStore(encoded),
            shape=data.shape,
            chunks=(rows, info.dim),
            dtype=info.dtype,
            compressors=info.compressors(),
            filters=None,
            fill_value=0,
            zarr_format=3,
            chunk_key_encoding=layout.CHUNK_KEY_ENCODING,
            config={"write_empty_chunks": True},
        )
        metadata = {key: encoded.pop(key) for key in list(encoded)}  # zarr.json, written last
        folder = self.paths.features(self.part_id, self.attempt)
        for start in range(0, data.shape[0], rows):
            array[start : start + rows] = data[start : start + rows]
            self._flush(encoded, folder)
        self._flush(metadata, folder)
        return int(data.shape[0])

    def _flush(self, encoded: dict[str, Any], folder: str) -> None:
        for key in list(encoded):
            self.fs.write_bytes(f"{folder}/{key}", encoded.pop(key).to_bytes(), atomic=False)

    def _manifest(self, rows: Sequence[_Row]) -> pl.DataFrame:
        offset = 0
        columns: dict[str, list[Any]] = {name: [] for name in MANIFEST_SCHEMA}
        extra_names = sorted({k for r in rows for k in r.extra})
        extras: dict[str, list[Any]] = {name: [] for name in extra_names}
        for i, r in enumerate(rows):
            n = 0 if r.features is None else int(r.features.shape[0])
            values = {
                "segment_id": r.segment_id, "video_id": r.video_id, "part_id": self.part_id,
                "attempt": self.attempt, "row": i, "offset": offset if n else None, "n_frames": n,
                "frame_times": r.frame_times, "boxes": r.boxes,
                "status": STATUS_OK if r.features is not None else STATUS_ERROR, "error": r.error,
                "error_reason": r.reason, "retryable": r.retryable,
            }
            for name, value in values.items():
                columns[name].append(value)
            for name in extra_names:
                extras[name].append(r.extra.get(name))
            offset += n
        frame = pl.DataFrame(columns, schema=MANIFEST_SCHEMA)
        if extras:
            frame = frame.with_columns(pl.Series(name, values, strict=False) for name, values in extras.items())
        return frame


def chunk_rows(n_frames: int, bytes_per_frame: int, frames_per_row: int | None) -> int:
    """Frames per chunk of a part's array: the part split into equal chunks of at most
    CHUNK_BYTES, each a whole number of rows (``frames_per_row`` frames).

    zarr stores every chunk at full size, so chunks sized to the data keep a part's bytes on
    disk within a fraction of a row of its feature bytes, at any part size.
    """
    unit = frames_per_row or 1
    rows = max(1, math.ceil(n_frames / unit))
    rows_per_chunk = max(1, layout.CHUNK_BYTES // max(1, bytes_per_frame * unit))
    n_chunks = math.ceil(rows / rows_per_chunk)
    return math.ceil(rows / n_chunks) * unit


def _floats(values: Sequence[float] | None) -> list[float] | None:
    return None if values is None else [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def _boxes(values: Sequence[Sequence[float]] | None) -> list[list[float]] | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float32).reshape(-1, 4)
    return array.tolist()
